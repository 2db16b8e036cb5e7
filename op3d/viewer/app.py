"""The viewer server: a viser server whose every browser tab gets its own Session over one shared RenderService.

    app = ViewerApp(ViewerModel.load(None), host='127.0.0.1', port=8080)
    print(app.url)
    app.wait()          # until Ctrl-C
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading

from op3d.viewer.render import RenderService


class ViewerStartError(RuntimeError):
    """The server cannot start (port in use, host not of this machine); the message is one line."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int) -> None:
    """Raise ViewerStartError unless (host, port) can be bound now. viser itself would move to the next free port
    without telling; the viewer refuses instead, so the printed URL is the one asked for."""
    if not 0 <= port <= 65535:
        raise ViewerStartError(f"--port: expected 0-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ViewerStartError(f"--host: cannot resolve {host!r} ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ViewerStartError(f"--port: port {port} on {host} is already in use (another viewer? pass "
                                       "another --port)") from None
            if err.errno == errno.EADDRNOTAVAIL:
                raise ViewerStartError(f"--host: {host} is not an address of this machine") from None
            raise ViewerStartError(f"--host/--port: cannot listen on {host}:{port} ({err.strerror})") from None


class ViewerApp:
    """Starts the viser server on (host, port) and a Session per connected tab."""

    def __init__(self, model, host: str = "127.0.0.1", port: int = 8080, outdir: str | None = None,
                 verbose: bool = False):
        import viser

        from op3d.viewer.session import Session

        check_bind(host, port)
        self.model = model
        self.service = RenderService(model)
        self.outdir = outdir
        self.sessions: dict[int, Session] = {}
        self._lock = threading.Lock()
        self.server = viser.ViserServer(host=host, port=port, label="op3d viewer", verbose=verbose)
        if port != 0 and self.server.get_port() != port:
            self.server.stop()
            raise ViewerStartError(f"--port: port {port} on {host} was taken while starting; pass another --port")
        self.host = host
        self.server.scene.set_up_direction("+y")
        # No environment map (viser fetches its HDRI files from the web; op3d runs offline) and no shadows: lit by the
        # default lights, the page stays fast on software WebGL.
        self.server.scene.configure_environment_map(hdri=None)
        self.server.scene.configure_default_lights(enabled=True, cast_shadow=False)
        self.server.gui.set_panel_label(f"op3d · {model.kind} · {model.name.rsplit('/', 1)[-1]}")
        self.server.on_client_connect(lambda client: self._connect(client, Session))
        self.server.on_client_disconnect(self._disconnect)

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _connect(self, client, session_class) -> None:
        session = session_class(client, self.service, self.outdir)
        with self._lock:
            self.sessions[client.client_id] = session

    def _disconnect(self, client) -> None:
        with self._lock:
            session = self.sessions.pop(client.client_id, None)
        if session is not None:
            session.close()

    def wait(self) -> None:
        """Serve until interrupted."""
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        with self._lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for session in sessions:
            session.close()
        self.server.stop()
