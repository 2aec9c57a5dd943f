# cython: language_level=3
"""Fast path of the SIP parser: one C pass over a well-formed, plain-ASCII message.

`scan(data)` returns the pieces of the message, or None for anything it does not handle: folded or
non-ASCII headers, escapes in quoted strings, a list in the top Via, any error at all. The pure-Python
parser in softswitch/sip/message.py is the reference and handles every None, so this kernel only has
to be right when it answers; tests compare the two on the RFC 4475 corpus and on fuzzed input.

Result for a request: (method, uri, headers, body_at, length, cseq, from, to, via)
for a response: (status:int, reason, headers, ...same...). `headers` is a list of (canonical name,
value), tuples the garbage collector does not track (`pair`); `from`/`to` are (display, uri, angle,
params); `via` is (protocol, transport, host, port, params) or None when the message has several Via
values; `length` is the Content-Length.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII


cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)

cdef dict NAMES = {}          # bytes as written -> canonical str (filled by `set_names`)
cdef dict LOWER_NAMES = {}    # lower-case bytes -> canonical str
cdef dict CORE = {}           # canonical name -> slot in the per-message position arrays
cdef enum:
    VIA, FROM, TO, CALLID, CSEQ, MAXFWD, CLEN, NCORE


def set_names(dict canonical, single):
    """Install the canonical header names (str -> str, keys in any case, compact forms included)."""
    NAMES.clear()
    LOWER_NAMES.clear()
    for key, value in canonical.items():
        NAMES[key.encode()] = value
        LOWER_NAMES[key.lower().encode()] = value
    CORE.clear()
    CORE.update({"Via": VIA, "From": FROM, "To": TO, "Call-ID": CALLID, "CSeq": CSEQ, "Max-Forwards": MAXFWD,
                 "Content-Length": CLEN})
    if set(CORE) - {"Via"} != set(single):
        raise ValueError("the single-valued headers differ from the kernel's core set")


cdef inline tuple _pair(str name, str value):
    """(name, value), not tracked by the garbage collector: a tuple of two str can never be part of a cycle.
    CPython untracks such a tuple itself, but only when a collection first walks it; a busy switch holds
    tens of thousands of header tuples younger than the last collection, most of what each one walked."""
    cdef tuple t = (name, value)
    PyObject_GC_UnTrack(<void*>t)
    return t


cdef inline tuple _any_pair(name, value):
    return _pair(name, value) if type(name) is str and type(value) is str else (name, value)


def pair(name, value):
    """A header (name, value) as `Message.headers` holds it: untracked when both are str."""
    return _any_pair(name, value)


def header_pairs(headers, dict canon, canonical):
    """`headers` as a new list of (canonical name, value): each name looked up in `canon` (a known
    spelling), else passed through `canonical`; each pair made by `pair`."""
    cdef list out = []
    for name, value in headers:
        known = canon.get(name)
        if known is None:
            known = canonical(name)
        out.append(_any_pair(known, value))
    return out


cdef unsigned char TOKEN[256]
cdef unsigned char HOSTCH[256]
cdef unsigned char URICH[256]


cdef void _tables():
    cdef int c
    cdef bytes extra = b"-.!%*_+`'~"
    for c in range(256):
        TOKEN[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or (c in extra)
        HOSTCH[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 45 or c == 46
        URICH[c] = 33 <= c <= 126 and c != 60 and c != 62 and c != 34


_tables()


cdef inline str _str(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    return PyUnicode_DecodeASCII(<const char*>p + a, b - a, NULL)


cdef inline Py_ssize_t _lws(const unsigned char* p, Py_ssize_t i, Py_ssize_t end):
    while i < end and (p[i] == 32 or p[i] == 9):
        i += 1
    return i


cdef object _params(const unsigned char* p, Py_ssize_t i, Py_ssize_t end):
    """`;a=b;c` -> dict, or None when anything is unusual."""
    cdef dict out = {}
    cdef Py_ssize_t n0, n1, v0, v1
    cdef unsigned char c
    i = _lws(p, i, end)
    while i < end:
        if p[i] != 59:  # ';'
            return None
        i = _lws(p, i + 1, end)
        n0 = i
        while i < end and TOKEN[p[i]]:
            i += 1
        n1 = i
        if n1 == n0:
            return None
        i = _lws(p, i, end)
        if i < end and p[i] == 61:  # '='
            i = _lws(p, i + 1, end)
            v0 = i
            if i < end and p[i] == 34:  # quoted, without escapes
                i += 1
                while i < end and p[i] != 34:
                    if p[i] == 92:
                        return None
                    i += 1
                if i >= end:
                    return None
                i += 1
            elif i < end and p[i] == 91:  # [ipv6]
                i += 1
                if i < end and p[i] == 93:
                    return None
                while i < end and p[i] != 93:
                    c = p[i]
                    if not ((48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102) or c == 58 or c == 46):
                        return None
                    i += 1
                if i >= end:
                    return None
                i += 1
            else:
                while i < end and (TOKEN[p[i]] or p[i] == 58):
                    i += 1
                if i == v0:
                    return None
            v1 = i
            out[_str(p, n0, n1).lower()] = _str(p, v0, v1)
            i = _lws(p, i, end)
        else:
            out[_str(p, n0, n1).lower()] = None
    return out


cdef bint _uri_ok(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    """Scheme ':' then at least one URI character, nothing that would end a name-addr."""
    cdef Py_ssize_t i = a
    if i >= b or not ((65 <= p[i] <= 90) or (97 <= p[i] <= 122)):
        return False
    while i < b and p[i] != 58:
        if not (HOSTCH[p[i]] or p[i] == 43):
            return False
        i += 1
    if i + 1 >= b:
        return False
    while i < b:
        if not URICH[p[i]]:
            return False
        i += 1
    return True


cdef object _address(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    """(display, uri, angle, params) for the plain forms of name-addr / addr-spec, else None."""
    cdef Py_ssize_t i = a, d0, d1, u0, u1
    cdef object display = None
    cdef object params
    if i < b and p[i] == 34:  # "display"
        d0 = i + 1
        i += 1
        while i < b and p[i] != 34:
            if p[i] == 92:
                return None
            i += 1
        if i >= b:
            return None
        display = _str(p, d0, i)
        i = _lws(p, i + 1, b)
        if i >= b or p[i] != 60:
            return None
    elif i < b and p[i] != 60:
        # a token display name (words separated by LWS) before '<', or an addr-spec
        d0 = i
        while i < b and (TOKEN[p[i]] or p[i] == 32 or p[i] == 9):
            i += 1
        if i < b and p[i] == 60:
            d1 = i
            while d1 > d0 and (p[d1 - 1] == 32 or p[d1 - 1] == 9):
                d1 -= 1
            if d1 > d0:
                display = _str(p, d0, d1)
        else:
            # addr-spec: the URI runs to the first ';', parameters follow
            u0 = a
            i = a
            while i < b and p[i] != 59:
                if p[i] == 44 or p[i] == 63 or not URICH[p[i]]:
                    return None
                i += 1
            u1 = i
            if not _uri_ok(p, u0, u1):
                return None
            params = _params(p, i, b) if i < b else {}
            if params is None:
                return None
            return (None, _str(p, u0, u1), False, params)
    # p[i] == '<'
    u0 = i + 1
    i = u0
    while i < b and p[i] != 62:
        if not URICH[p[i]]:
            return None
        i += 1
    if i >= b:
        return None
    u1 = i
    if not _uri_ok(p, u0, u1):
        return None
    params = _params(p, i + 1, b)
    if params is None:
        return None
    return (display, _str(p, u0, u1), True, params)


cdef object _via(const unsigned char* p, Py_ssize_t a, Py_ssize_t b):
    cdef Py_ssize_t i = a, t0, h0, h1
    cdef long port = -1
    cdef object params, rport
    if b - a < 9 or not (p[a] == 83 and p[a + 1] == 73 and p[a + 2] == 80 and p[a + 3] == 47 and p[a + 4] == 50
                         and p[a + 5] == 46 and p[a + 6] == 48 and p[a + 7] == 47):  # "SIP/2.0/"
        return None
    i = a + 8
    t0 = i
    while i < b and TOKEN[p[i]]:
        i += 1
    if i == t0 or i >= b or not (p[i] == 32 or p[i] == 9):
        return None
    transport = _str(p, t0, i).upper()
    i = _lws(p, i, b)
    h0 = i
    if i < b and p[i] == 91:
        return None  # IPv6 sent-by: the reference handles it
    while i < b and HOSTCH[p[i]]:
        i += 1
    h1 = i
    if h1 == h0:
        return None
    if i < b and p[i] == 58:
        i += 1
        port = 0
        t0 = i
        while i < b and 48 <= p[i] <= 57 and i - t0 < 5:
            port = port * 10 + (p[i] - 48)
            i += 1
        if i == t0 or port < 1 or port > 65535 or (i < b and 48 <= p[i] <= 57):
            return None
    params = _params(p, i, b)
    if params is None:
        return None
    rport = params.get("rport")
    if rport is not None and not (rport.isdigit() and 0 < int(rport) <= 65535):
        return None
    return ("SIP/2.0", transport, _str(p, h0, h1), None if port < 0 else port, params)


cdef long _number(const unsigned char* p, Py_ssize_t a, Py_ssize_t b, long limit):
    """Decimal digits in [a, b) up to `limit`, else -1."""
    cdef long value = 0
    if a >= b or b - a > 10:
        return -1
    while a < b:
        if not 48 <= p[a] <= 57:
            return -1
        value = value * 10 + (p[a] - 48)
        if value > limit:
            return -1
        a += 1
    return value


def scan(bytes data):
    cdef const unsigned char* p = data
    cdef Py_ssize_t n = len(data), i, end, line, colon, v0, v1, nm1, first_end, body_at
    cdef long length = -1, seq = -1, status = 0
    cdef list headers = []
    cdef Py_ssize_t start[NCORE]
    cdef Py_ssize_t stop[NCORE]
    cdef int vias = 0, k
    for k in range(NCORE):
        start[k] = -1
    cdef unsigned char c
    cdef bytes name_bytes
    # header block: up to the first CRLF CRLF; plain ASCII only
    end = -1
    for i in range(n - 3):
        c = p[i]
        if c == 13:
            if p[i + 1] == 10 and p[i + 2] == 13 and p[i + 3] == 10:
                end = i
                break
            if p[i + 1] != 10:
                return None
        elif c == 10:
            if i == 0 or p[i - 1] != 13:
                return None
        elif c != 9 and (c < 32 or c > 126):
            return None
    if end < 0:
        return None
    body_at = end + 4
    # start line
    first_end = 0
    while p[first_end] != 13:
        first_end += 1
    if first_end > 12 and p[0] == 83 and p[1] == 73 and p[2] == 80 and p[3] == 47:  # "SIP/"
        if not (p[4] == 50 and p[5] == 46 and p[6] == 48 and p[7] == 32 and p[11] == 32):
            return None
        status = _number(p, 8, 11, 699)
        if status < 100:
            return None
        method = None
        start_a = status
        start_b = _str(p, 12, first_end)
    else:
        i = 0
        while i < first_end and TOKEN[p[i]]:
            i += 1
        if i == 0 or i >= first_end or p[i] != 32:
            return None
        method = _str(p, 0, i)
        v0 = i + 1
        i = v0
        while i < first_end and p[i] != 32:
            i += 1
        if not _uri_ok(p, v0, i) or first_end - i != 8:
            return None
        if not (p[i + 1] == 83 and p[i + 2] == 73 and p[i + 3] == 80 and p[i + 4] == 47 and p[i + 5] == 50
                and p[i + 6] == 46 and p[i + 7] == 48):  # " SIP/2.0"
            return None
        start_a = method
        start_b = _str(p, v0, i)
    # header lines
    line = first_end + 2
    while line < end + 2:
        i = line
        if p[i] == 32 or p[i] == 9:
            return None  # folding: the reference unfolds
        while TOKEN[p[i]]:
            i += 1
        nm1 = i
        if nm1 == line:
            return None
        i = _lws(p, i, end)
        if p[i] != 58:
            return None
        colon = i
        v0 = _lws(p, colon + 1, end + 2)
        i = v0
        while p[i] != 13:
            i += 1
        v1 = i
        while v1 > v0 and (p[v1 - 1] == 32 or p[v1 - 1] == 9):
            v1 -= 1
        name_bytes = data[line:nm1]
        name = NAMES.get(name_bytes)
        if name is None:
            name = LOWER_NAMES.get(name_bytes.lower())
            if name is None:
                name = _str(p, line, nm1)
        value = _str(p, v0, v1)
        headers.append(_pair(name, value))
        slot = CORE.get(name)
        if slot is not None:
            k = slot
            if k == VIA:
                vias += 1
            elif start[k] >= 0:
                return None  # a second single-valued header: the reference reports it
            if start[k] < 0:
                start[k] = v0
                stop[k] = v1
        line = i + 2
    # the core headers
    if start[FROM] < 0 or start[TO] < 0 or start[CALLID] < 0 or start[CSEQ] < 0 or not vias:
        return None
    v0, v1 = start[CSEQ], stop[CSEQ]
    i = v0
    while i < v1 and 48 <= p[i] <= 57:
        i += 1
    seq = _number(p, v0, i, 2147483647)
    if seq < 0 or i >= v1 or not (p[i] == 32 or p[i] == 9):
        return None
    i = _lws(p, i, v1)
    cseq_method = _str(p, i, v1)
    while i < v1:
        if not TOKEN[p[i]]:
            return None
        i += 1
    if method is not None and cseq_method != method:
        return None
    v0, v1 = start[CALLID], stop[CALLID]
    if v0 == v1:
        return None
    for i in range(v0, v1):
        if p[i] == 32 or p[i] == 9:
            return None
    if start[MAXFWD] >= 0:
        v0, v1 = start[MAXFWD], stop[MAXFWD]
        if method is not None and _number(p, v0, v1, 255) < 0:
            return None
    if start[CLEN] < 0:
        return None
    v0, v1 = start[CLEN], stop[CLEN]
    length = _number(p, v0, v1, 65535)
    if length < 0 or length > n - body_at:
        return None
    v0, v1 = start[FROM], stop[FROM]
    frm = _address(p, v0, v1)
    v0, v1 = start[TO], stop[TO]
    to = _address(p, v0, v1)
    if frm is None or to is None:
        return None
    v0, v1 = start[VIA], stop[VIA]
    for i in range(v0, v1):
        if p[i] == 44:
            return None  # a comma-joined Via list: the reference splits it
    via = _via(p, v0, v1)
    if via is None:
        return None
    return (start_a, start_b, headers, body_at, length, seq, cseq_method, frm, to, via if vias == 1 else None)
