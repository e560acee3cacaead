"""Offscreen ``rgb_array`` rendering of highway-env that works on headless machines.

highway-env 1.12's ``EnvViewer.__init__`` sets ``enabled = False`` when the environment variable
``SDL_VIDEODRIVER`` is ``"dummy"``, and ``EnvViewer.display`` then returns before drawing anything.
Every ``rgb_array`` frame is then the untouched, all-black surface. Test suites and headless servers
set that variable so that pygame needs no display, so the demo showed black frames there.

With ``render_mode="rgb_array"`` the env sets ``offscreen_rendering`` to True, and the viewer draws
on plain ``pygame.Surface`` objects that need no video driver at all. :class:`OffscreenFrames`
therefore turns such an offscreen viewer back on before each frame.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym


class OffscreenFrames(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Draw highway-env's offscreen ``rgb_array`` frames even under ``SDL_VIDEODRIVER=dummy``.

    Spaces, rewards and episode ends are those of the wrapped env; only :meth:`render` changes.
    A viewer that draws on a window (``render_mode="human"``) is left as highway-env configured it.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        super().__init__(env)

    def render(self) -> Any:
        base = self.env.unwrapped
        if base.render_mode == "rgb_array" and getattr(base, "viewer", None) is None:
            from highway_env.envs.common.graphics import EnvViewer

            # The same viewer AbstractEnv.render would create, made here so it can be enabled first.
            base.viewer = EnvViewer(base)
        viewer = getattr(base, "viewer", None)
        if viewer is not None and viewer.offscreen:
            viewer.enabled = True
        return self.env.render()
