"""GAN inversion: a photo (with or without its camera label) into an op3d generator.

Stage 1 projects the image into W or W+ (the StyleGAN2 projector recipe; optionally optimising the camera too),
stage 2 tunes a copy of the generator around the found w (pivotal tuning, PTI). Modules: schedules (the
projector's ramps), losses (LPIPS with the VGG16 detector file, MSE, PSNR, noise regulariser), camera (yaw, pitch,
roll, radius, focal -> label, differentiable), inputs (targets and camera files), projector (stage 1), pti
(stage 2), outputs (files), pipeline (the script's run). Usage and sources: docs/inversion.md."""
