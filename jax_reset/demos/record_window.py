"""The recorder's window: a thin pygame layer over ``record.Recorder``.

Keys: arrows + space (fire), mapped onto the game's minimal action set; Backspace = one frame
back (held: keeps rewinding); R = jump back ``rewind_s`` seconds; S = save; Esc = quit. The
window shows the game, score, frame and lives. pygame is the optional extra ``record``.
"""

from __future__ import annotations

import os
from pathlib import Path

import ale_py

from jax_reset.demos.format import DemoError
from jax_reset.demos.record import FRAMES_PER_S, Recorder

SCALE = 3  # 160 x 210 Atari pixels -> 480 x 630
STATUS_PX = 28


def display_problem() -> str | None:
    """Why no window can open here, or None."""
    if not any(os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")):
        return ("no display: recording needs a window (DISPLAY, WAYLAND_DISPLAY or "
                "SDL_VIDEODRIVER is unset)")
    return None


def keys_to_action(up: bool, down: bool, left: bool, right: bool, fire: bool,
                   minimal_set: list[ale_py.Action]) -> int:
    """The held keys -> an index into the minimal action set.

    The keys make one of ALE's 18 actions (opposite directions cancel); when the game's minimal
    set lacks it, fire, then the vertical direction, then the horizontal one is dropped until
    one is found (Pong has no UP: UP + FIRE plays FIRE). NOOP is index 0 of every minimal set.
    """
    vertical = "UP" if up and not down else "DOWN" if down and not up else ""
    horizontal = "RIGHT" if right and not left else "LEFT" if left and not right else ""
    names = [a.name for a in minimal_set]
    for v, h, f in ((vertical, horizontal, fire), (vertical, horizontal, False),
                    ("", horizontal, fire), (vertical, "", fire), ("", horizontal, False),
                    (vertical, "", False), ("", "", fire)):
        name = v + h + ("FIRE" if f else "")
        if name in names:
            return names.index(name)
    return 0


class RecorderWindow:
    """The window over a ``Recorder``: call ``tick()`` once per frame until it returns False.

    Keys are tracked from KEYDOWN/KEYUP events (not from the keyboard's state), so a script can
    drive the window by posting events, as the tests do with SDL's dummy video driver.
    """

    def __init__(self, recorder: Recorder, out: str | os.PathLike, *, speed: float = 1.0,
                 rewind_s: float = 5.0) -> None:
        import pygame

        self.pg = pygame
        self.recorder, self.out = recorder, Path(out)
        self.fps = FRAMES_PER_S * speed
        self.rewind_s = rewind_s
        pygame.init()
        self.surface = pygame.display.set_mode((160 * SCALE, 210 * SCALE + STATUS_PX))
        pygame.display.set_caption(f"jax-reset record: {recorder.game} -> {self.out}")
        self.font = pygame.font.Font(None, 24)
        self.clock = pygame.time.Clock()
        self.held: set[int] = set()
        self.message = "arrows + space: play, Backspace: back, R: back, S: save, Esc: quit"
        self.saved: Path | None = None

    def action(self) -> int:
        pg, held = self.pg, self.held
        return keys_to_action(pg.K_UP in held, pg.K_DOWN in held, pg.K_LEFT in held,
                              pg.K_RIGHT in held, pg.K_SPACE in held,
                              list(self.recorder.action_set))

    def handle(self, event) -> bool:
        """One pygame event; False to quit."""
        pg = self.pg
        if event.type == pg.QUIT:
            return False
        if event.type == pg.KEYUP:
            self.held.discard(event.key)
        if event.type != pg.KEYDOWN:
            return True
        self.held.add(event.key)
        if event.key == pg.K_ESCAPE:
            return False
        if event.key == pg.K_r:
            self.recorder.back_seconds(self.rewind_s)
            self.message = f"back {self.rewind_s:g} s"
        elif event.key == pg.K_s:
            try:
                self.saved, result = self.recorder.save(self.out)
                self.message = f"saved {self.saved}: {len(result.rewards):,} frames"
            except DemoError as err:
                self.message = f"not saved: {err}"
        return True

    def tick(self) -> bool:
        """Handles pending events, plays or rewinds one frame, draws; False to quit."""
        for event in self.pg.event.get():
            if not self.handle(event):
                return False
        if self.pg.K_BACKSPACE in self.held:
            self.recorder.back(1)
        else:
            self.recorder.step(self.action())
        self.draw()
        self.clock.tick(self.fps)
        return True

    def draw(self) -> None:
        pg, rec = self.pg, self.recorder
        frame = pg.surfarray.make_surface(rec.screen().swapaxes(0, 1))
        self.surface.fill((0, 0, 0))
        self.surface.blit(pg.transform.scale(frame, (160 * SCALE, 210 * SCALE)), (0, 0))
        s = rec.status()
        text = (f"score {s.score:g}  frame {s.frame:,}  lives {s.lives}"
                f"{'  GAME OVER (Backspace/R)' if s.game_over else ''}  |  {self.message}")
        self.surface.blit(self.font.render(text, True, (255, 255, 255)), (4, 210 * SCALE + 6))
        pg.display.flip()

    def close(self) -> None:
        self.pg.quit()


def record(game: str, out: str | os.PathLike, *, speed: float = 1.0,
           rewind_s: float = 5.0) -> Path | None:
    """``python -m jax_reset.demo record``: opens the window and plays until Esc. Returns the
    last saved file, or None. Raises ``DemoError`` (one line) without a display or pygame."""
    problem = display_problem()
    if problem:
        raise DemoError(problem)
    if speed <= 0:
        raise DemoError(f"--speed must be positive, got {speed}")
    try:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame
    except ImportError:
        raise DemoError("recording needs pygame: pip install -e '.[record]'") from None
    recorder = Recorder(game)
    try:
        window = RecorderWindow(recorder, out, speed=speed, rewind_s=rewind_s)
    except pygame.error as err:
        raise DemoError(f"cannot open a window: {err}") from None
    try:
        while window.tick():
            pass
    finally:
        window.close()
    return window.saved
