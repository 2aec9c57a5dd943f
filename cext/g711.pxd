# The law itself, for other kernels to cimport (inline C, no Python call per sample).
from libc.stdint cimport int16_t, uint8_t


cdef extern from "native/g711.h" nogil:
    uint8_t g711_lin2ulaw(int16_t x)
    int16_t g711_ulaw2lin(uint8_t code)
    uint8_t g711_lin2alaw(int16_t x)
    int16_t g711_alaw2lin(uint8_t code)
