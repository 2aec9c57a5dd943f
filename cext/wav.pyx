# cython: language_level=3
"""Python binding of the recorder's WAV writer (native/wav.c), for tools, tests and Python-side recordings.

The media thread calls the C functions directly; this class is the same writer behind a Python object.
write() only copies into the writer's ring (the GIL is released), close() waits for the shared writer
thread to flush, patch the header and sync. A per-object lock keeps the C contract (one producer at a
time, no write racing the close) when several Python threads share a writer.
"""

import os
from cext.buffers import pcm_bytes

from cpython.pythread cimport (
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_type_lock,
    WAIT_LOCK,
)
from libc.stdint cimport int16_t, uint64_t


cdef extern from "native/wav.h" nogil:
    ctypedef struct wav_writer_t:
        pass
    int WAV_RING_SECONDS
    wav_writer_t *wav_open(const char *path, int channels, int sample_rate, int *err)
    int wav_write(wav_writer_t *w, const int16_t *interleaved, int frames)
    void wav_stats(const wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped, int *error)
    int wav_close(wav_writer_t *w, uint64_t *frames_written, uint64_t *frames_dropped)


RING_SECONDS = WAV_RING_SECONDS



cdef class WavWriter:
    """A PCM16 WAV file being recorded: WavWriter(path, channels, rate); write(pcm); close()."""

    cdef wav_writer_t *_w
    cdef PyThread_type_lock _lock
    cdef readonly object path
    cdef readonly int channels
    cdef readonly int rate
    cdef readonly int error
    cdef uint64_t _written, _dropped

    def __cinit__(self, path, int channels, int rate):
        cdef int err = 0
        cdef bytes bpath = os.fsencode(path)
        cdef const char *cpath = bpath
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError()
        self.path = path
        self.channels = channels
        self.rate = rate
        with nogil:
            self._w = wav_open(cpath, channels, rate, &err)
        if self._w == NULL:
            raise OSError(err, os.strerror(err), os.fspath(path))

    def __dealloc__(self):
        cdef uint64_t written, dropped
        if self._w != NULL:
            with nogil:
                wav_close(self._w, &written, &dropped)
            self._w = NULL
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    @property
    def closed(self) -> bool:
        return self._w == NULL

    def write(self, data) -> int:
        """Queues interleaved PCM16 frames (bytes or int16 array); returns the frames accepted.

        Never blocks on the disk: frames that do not fit in the ring are dropped and counted.
        """
        cdef const unsigned char[::1] buf = pcm_bytes(data)
        cdef Py_ssize_t nbytes = buf.shape[0]
        cdef int frame_bytes = 2 * self.channels
        cdef int frames, accepted = 0
        cdef const int16_t *pcm
        if nbytes % frame_bytes:
            raise ValueError(f"{nbytes} bytes is not a whole number of {self.channels}-channel PCM16 frames")
        if nbytes // frame_bytes > 0x7FFFFFFF:
            raise ValueError("too many frames in one write")
        frames = <int>(nbytes // frame_bytes)
        if frames == 0:
            self._check_open()
            return 0
        pcm = <const int16_t *>&buf[0]
        with nogil:
            PyThread_acquire_lock(self._lock, WAIT_LOCK)
            if self._w != NULL:
                accepted = wav_write(self._w, pcm, frames)
            else:
                frames = -1
            PyThread_release_lock(self._lock)
        if frames < 0:
            self._check_open()
        return accepted

    def stats(self) -> tuple:
        """(frames_written, frames_dropped, errno) so far; the final figures once closed."""
        cdef uint64_t written = 0, dropped = 0
        cdef int err = 0
        cdef bint is_open = False
        with nogil:
            PyThread_acquire_lock(self._lock, WAIT_LOCK)
            if self._w != NULL:
                is_open = True
                wav_stats(self._w, &written, &dropped, &err)
            PyThread_release_lock(self._lock)
        if not is_open:
            return self._written, self._dropped, self.error
        return written, dropped, err

    def close(self) -> tuple:
        """Flushes, writes the final header, syncs; returns (frames_written, frames_dropped).

        A write error (disk full...) does not raise: the file keeps what was written, the lost frames are
        counted as dropped and `error` holds the errno. Closing again returns the same figures.
        """
        cdef uint64_t written = 0, dropped = 0
        cdef int rc = 0
        cdef bint was_open = False
        with nogil:
            PyThread_acquire_lock(self._lock, WAIT_LOCK)
            if self._w != NULL:
                was_open = True
                rc = wav_close(self._w, &written, &dropped)
                self._w = NULL
            PyThread_release_lock(self._lock)
        if was_open:
            self._written, self._dropped, self.error = written, dropped, -rc
        return self._written, self._dropped

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    cdef _check_open(self):
        if self._w == NULL:
            raise ValueError(f"write to a closed WavWriter ({self.path})")
