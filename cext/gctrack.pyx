# cython: language_level=3
"""Taking values the cyclic garbage collector can never free out of its walks.

A young-generation collection walks every container object allocated since the last one that is still
alive; on a busy switch that is tens of thousands of objects a call's life keeps (keys, timer entries,
parsed SDP), each costing a cache miss or two: collections of 50-90 ms, the tail of INVITE->180. An
object that refers only to untracked objects (str, int, float, None, bytes, untracked tuples) cannot be
part of a reference cycle, so refcounting alone frees it; CPython untracks such tuples itself, but only
once a collection has walked them. These helpers do it when the value is made.
"""

import gc

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




class _Plain:
    pass


cdef extern from *:
    """
    /* Types whose dealloc untracks with the checked PyObject_GC_UnTrack, so an object of theirs may die
       untracked: dict, list, tuple, set, module, weakref, builtin method, and instances of classes defined
       in Python (subtype_dealloc, which re-tracks before a GC base type's dealloc). */
    static int gctrack_dies_untracked(PyObject *o, PyObject *plain) {
        PyTypeObject *t = Py_TYPE(o);
        return t == &PyDict_Type || t == &PyList_Type || t == &PyTuple_Type || t == &PySet_Type
            || t == &PyModule_Type || t == &_PyWeakref_RefType || t == &PyCFunction_Type
            || t->tp_dealloc == ((PyTypeObject *)plain)->tp_dealloc;
    }
    /* Types whose dealloc unlinks unchecked (it would crash on an untracked object), and whose start-up
       objects live as long as the process anyway (functions, cells, classes, descriptors): one more
       reference makes sure they never reach that dealloc. Never frames, generators, coroutines or futures:
       those end, and pinned they would keep what they hold. */
    static int gctrack_pinnable(PyObject *o) {
        PyTypeObject *t = Py_TYPE(o);
        return t == &PyFunction_Type || t == &PyCell_Type || PyType_Check(o) || t == &PyProperty_Type
            || t == &PyClassMethod_Type || t == &PyStaticMethod_Type || t == &PyMethodDescr_Type
            || t == &PyClassMethodDescr_Type || t == &PyGetSetDescr_Type || t == &PyMemberDescr_Type
            || t == &PyWrapperDescr_Type || t == &Py_GenericAliasType;
    }
    """
    int gctrack_dies_untracked(object o, object plain)
    int gctrack_pinnable(object o)
    void Py_INCREF(object o)


def untrack_survivors():
    """Take what survives start-up out of every later collection's walk, and return how many objects.

    Only for a long-running process, right after a full collection at the end of its start-up: what
    survived it (modules, classes, functions, the services and their tables) lives as long as the process,
    so no later collection can free it, and each full collection would walk it in vain. Generations 0-2
    are visited (not frozen objects). Objects whose type may die untracked (dicts, lists, tuples,
    instances of Python classes...) are untracked; functions, cells, classes and descriptors also get one
    reference more, so they never die (their dealloc would crash on an untracked object); anything else
    stays tracked. A dict tracks itself again when it is given a container. Were a survivor to die inside a
    cycle after all, that cycle leaks, once; its references still count as outside ones, so nothing it
    holds is ever freed too early."""
    cdef Py_ssize_t n = 0
    for obj in gc.get_objects():
        if not PyObject_GC_IsTracked(obj):
            continue
        if gctrack_pinnable(obj):
            Py_INCREF(obj)
        elif not gctrack_dies_untracked(obj, _Plain):
            continue
        PyObject_GC_UnTrack(<void*>obj)
        n += 1
    return n
