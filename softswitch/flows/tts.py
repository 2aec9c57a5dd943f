"""Text to speech for `say`: espeak-ng (Debian's, run as a subprocess) as the embedded default, behind the
`Tts` interface so another engine can be plugged in; rendered audio cached by (text, voice).

Why a subprocess and not a library binding: espeak-ng's library is not thread-safe and one bad input must
not take the softswitch down with it; a render is tens of milliseconds, and the cache makes prompts said
again free. The text goes on stdin (never through a shell); the WAV espeak-ng writes is converted to 8 kHz
PCM16 (media.audio) once, at render.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from typing import Protocol

from media.audio import decode_wav

VOICE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*(\+[a-z0-9]{1,8})?")  # language, then an espeak-ng variant
MAX_TEXT = 4096
RENDER_TIMEOUT_S = 20.0


class TtsError(Exception):
    """The text could not be rendered (unknown voice, engine missing or failing)."""


class Tts(Protocol):
    async def render(self, text: str, voice: str) -> bytes:
        """8 kHz mono PCM16 (native-endian) of `text` spoken in `voice` (a language tag such as en-us)."""
        ...


class EspeakTts:
    """espeak-ng, with an in-memory LRU cache of rendered audio (`cache_bytes` of PCM at most)."""

    def __init__(self, binary: str = "espeak-ng", speed_wpm: int = 160, cache_bytes: int = 64 << 20) -> None:
        self.binary = binary
        self.speed_wpm = speed_wpm
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self.renders = 0

    async def render(self, text: str, voice: str) -> bytes:
        if not VOICE.fullmatch(voice):
            raise TtsError(f"not a voice: {voice!r} (a language tag such as en-us, with a variant such as en-us+f3)")
        if not text.strip() or len(text) > MAX_TEXT:
            raise TtsError(f"say needs 1 to {MAX_TEXT} characters of text")
        key = (text, voice)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if key in self._pending:  # the same prompt asked twice at once: rendered once
            return await asyncio.shield(self._pending[key])
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            pcm = await self._espeak(text, voice)
            future.set_result(pcm)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: those waiting get it, nobody else needs to
            raise
        finally:
            del self._pending[key]
        self._remember(key, pcm)
        return pcm

    def _remember(self, key: tuple[str, str], pcm: bytes) -> None:
        self._cache[key] = pcm
        self._size += len(pcm)
        while self._size > self.cache_bytes and self._cache:
            _, old = self._cache.popitem(last=False)
            self._size -= len(old)

    async def _espeak(self, text: str, voice: str) -> bytes:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                "-v",
                voice,
                "-s",
                str(self.speed_wpm),
                "--stdout",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise TtsError(f"cannot run {self.binary}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(text.encode()), RENDER_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TtsError(f"{self.binary} took longer than {RENDER_TIMEOUT_S:g} s") from None
        if proc.returncode != 0 or not out:
            why = err.decode(errors="replace").strip()[:200] or f"exit status {proc.returncode}"
            raise TtsError(f"{self.binary} -v {voice}: {why}")
        self.renders += 1
        try:
            return decode_wav(out, self.binary)
        except ValueError as exc:
            raise TtsError(str(exc)) from None
