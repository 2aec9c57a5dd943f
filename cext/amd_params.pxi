# The AMD kernel's parameters (native/amd.h), for the kernels that hand them over: included, not cimported.
cdef extern from "native/amd.h" nogil:
    ctypedef struct amd_params_t:
        double silence_dbm0
        double margin_db
        int voice_on_ms
        int voice_off_ms
        int tone_min_hz
        int tone_max_hz
        int tone_min_ms
        double tone_residual
        double tone_drift
    void amd_defaults(amd_params_t *p)
