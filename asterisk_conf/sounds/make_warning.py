"""Write rating-warning.wav: three short 850 Hz beeps, 8 kHz mono 16-bit PCM (Asterisk's format_wav
reads it as signed linear, so any channel codec gets it by the usual one-step translation).

    python asterisk_conf/sounds/make_warning.py    # rewrites the file next to this script
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

RATE = 8000
TONE_HZ = 850
BEEP_S, GAP_S, BEEPS = 0.2, 0.15, 3
AMPLITUDE = 0.3 * 32767  # about -10 dBFS: clear over a call, not harsh
FADE_S = 0.005  # no clicks at the edges of a beep


def samples() -> list[int]:
    out: list[int] = []
    beep, gap, fade = round(BEEP_S * RATE), round(GAP_S * RATE), round(FADE_S * RATE)
    for n in range(BEEPS):
        for i in range(beep):
            envelope = min(1.0, i / fade, (beep - 1 - i) / fade)
            out.append(round(AMPLITUDE * envelope * math.sin(2 * math.pi * TONE_HZ * i / RATE)))
        if n < BEEPS - 1:
            out.extend([0] * gap)
    return out


def write(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples()))


if __name__ == "__main__":
    write(Path(__file__).with_name("rating-warning.wav"))
