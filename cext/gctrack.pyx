# cython: language_level=3
"""Taking values the cyclic garbage collector can never free out of its walks.

A young-generation collection walks every container object allocated since the last one that is still
alive; on a busy switch that is tens of thousands of objects a call's life keeps (keys, timer entries,
parsed SDP), each costing a cache miss or two: collections of 50-90 ms, the tail of INVITE->180. An
object that refers only to untracked objects (str, int, float, None, bytes, untracked tuples) cannot be
part of a reference cycle, so refcounting alone frees it; CPython untracks such tuples itself, but only
once a collection has walked them. These helpers do it when the value is made.
"""

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)
    int PyObject_GC_IsTracked(object op)
    int PyObject_IS_GC(object op)

cdef extern from *:
    """
    typedef struct { PyObject *type; PyObject *constants; } gctrack_leaf_ctx;

    static int gctrack_visit(PyObject *o, void *arg) {
        gctrack_leaf_ctx *ctx = (gctrack_leaf_ctx *)arg;
        if (o == ctx->type || !PyObject_IS_GC(o) || !PyObject_GC_IsTracked(o))
            return 0;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ctx->constants); i++)
            if (PyTuple_GET_ITEM(ctx->constants, i) == o)
                return 0;
        return 1;
    }
    /* 1 when nothing `op` refers to, its own type and `constants` (a tuple) aside, is tracked */
    static int gctrack_is_leaf(PyObject *op, PyObject *constants) {
        traverseproc traverse = Py_TYPE(op)->tp_traverse;
        gctrack_leaf_ctx ctx = {(PyObject *)Py_TYPE(op), constants};
        return traverse == NULL || traverse(op, gctrack_visit, &ctx) == 0;
    }
    """
    int gctrack_is_leaf(object op, tuple constants)


def untracked(tuple t):
    """`t`, untracked when none of its items can ever refer to a tracked object: each is outside the
    collector (str, int, float, None, bytes) or an untracked tuple. CPython's own rule: a dict or list of
    scalars is untracked today but may hold a container tomorrow, so a tuple holding one stays tracked."""
    for item in t:
        if PyObject_IS_GC(item) and (type(item) is not tuple or PyObject_GC_IsTracked(item)):
            return t
    PyObject_GC_UnTrack(<void*>t)
    return t


def untrack_scalar(obj):
    """`obj`, untracked: only for an immutable object whose fields are all str, int, float, bool or None
    (a frozen SDP line), which therefore can never refer to a tracked object. Returns `obj`."""
    if PyObject_IS_GC(obj):
        PyObject_GC_UnTrack(<void*>obj)
    return obj


def untrack_leaf(obj, tuple constants not None=()):
    """Untrack `obj` when nothing it refers to is tracked now, its type and `constants` aside (objects that
    live as long as the process, such as enum members: they cannot be garbage, so cannot close a garbage
    cycle). True when it is untracked now.

    Unlike `untracked`, this takes mutable objects (a list, an instance, one holding an empty dict), which
    CPython never untracks, as it cannot know what they will hold. The caller knows: only for a value that
    nothing it holds, then or later, can refer back to (a message kept only to be sent again, whose parse
    cache may fill again with parsed headers that never refer to a message). Were it wrong, the cost is a
    leak, never a premature free: an untracked object's references count as outside ones."""
    if not PyObject_IS_GC(obj) or not PyObject_GC_IsTracked(obj):
        return True
    if not gctrack_is_leaf(obj, constants):
        return False
    PyObject_GC_UnTrack(<void*>obj)
    return True
