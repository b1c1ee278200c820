/*
 * roomsync.core._postcard_c: the hot path of roomsync.core.postcard.decode_pack in C.
 *
 * Same format and the same checks as postcard._decode_pack_fast (SPEC section 2):
 *
 *     struct Pack   { changes: Vec<Change> }
 *     struct Change { path: String, ts: u64, counter: u32, actor: String, op: Op,
 *                     seq: Option<u64> }
 *     enum   Op     { Set(Vec<u8>) = 0, Delete = 1 }
 *
 * decode_pack(data) returns the list of Change objects, or None when anything is
 * irregular (a truncated or overlong varint, an overflow, a length past the end, invalid
 * UTF-8, an unknown tag, trailing bytes): the Python caller then re-reads the input with
 * the strict Reader, which raises the documented CodecError. So this module never decides
 * what an error says, only how fast a valid pack is read.
 *
 * Change objects are allocated with the type's tp_alloc and their six slots are set
 * through the member descriptors given to setup(): exactly what the Python fast path does
 * with object.__new__ and the slots' __set__ (the frozen dataclass's __init__ is skipped;
 * Change has no __post_init__).
 *
 * Bounded: every read is checked against the buffer's end before it happens, varints are
 * at most 10 (u64) or 5 (u32) bytes and checked for overflow before they are shifted,
 * and on any failure the partial list is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define N_SLOTS 6
#define MIN_CHANGE_BYTES 6
#define OP_SET 0
#define OP_DELETE 1

static PyTypeObject *change_type = NULL;
static PyObject *slot_descr[N_SLOTS]; /* path, ts, counter, actor, value, seq */

/* Reads a LEB128 varint of at most max_bytes bytes whose value is at most max_value.
 * Returns 0 and advances *pos, or -1 (irregular: truncated, overlong, overflowing). */
static int
read_varint(const unsigned char *data, Py_ssize_t size, Py_ssize_t *pos, int max_bytes,
            uint64_t max_value, uint64_t *out)
{
    uint64_t result = 0;
    int shift = 0;
    Py_ssize_t p = *pos;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= size) {
            return -1;
        }
        unsigned char byte = data[p++];
        uint64_t part = (uint64_t)(byte & 0x7F);
        if (shift == 63 && part > 1) {
            return -1; /* would not fit in 64 bits */
        }
        result |= part << shift;
        if (byte < 0x80) {
            if (byte == 0 && i > 0) {
                return -1; /* overlong: a trailing zero continuation */
            }
            if (result > max_value) {
                return -1;
            }
            *pos = p;
            *out = result;
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* A length-prefixed run of bytes: its start and length, or -1 when it passes the end. */
static int
read_span(const unsigned char *data, Py_ssize_t size, Py_ssize_t *pos, Py_ssize_t *start,
          Py_ssize_t *len)
{
    uint64_t n;
    if (read_varint(data, size, pos, 10, UINT64_MAX, &n) < 0) {
        return -1;
    }
    if (n > (uint64_t)(size - *pos)) {
        return -1;
    }
    *start = *pos;
    *len = (Py_ssize_t)n;
    *pos += (Py_ssize_t)n;
    return 0;
}

/* A str from UTF-8 bytes; NULL with the error cleared when they are not valid UTF-8. */
static PyObject *
utf8(const unsigned char *data, Py_ssize_t start, Py_ssize_t len)
{
    PyObject *s = PyUnicode_DecodeUTF8((const char *)data + start, len, "strict");
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
    }
    return s;
}

/* Sets the six slots of a new Change (steals no reference). 0, or -1 with an error set. */
static int
fill(PyObject *change, PyObject *values[N_SLOTS])
{
    for (int i = 0; i < N_SLOTS; i++) {
        descrsetfunc set = Py_TYPE(slot_descr[i])->tp_descr_set;
        if (set(slot_descr[i], change, values[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
decode(const unsigned char *data, Py_ssize_t size)
{
    Py_ssize_t pos = 0;
    uint64_t n;
    if (read_varint(data, size, &pos, 10, UINT64_MAX, &n) < 0) {
        Py_RETURN_NONE;
    }
    if (n > (uint64_t)((size - pos) / MIN_CHANGE_BYTES)) {
        Py_RETURN_NONE; /* more changes than the bytes left could hold */
    }
    PyObject *out = PyList_New((Py_ssize_t)n);
    if (out == NULL) {
        return NULL;
    }
    /* The last actor read: a catch-up is mostly one actor, so its str is shared. */
    PyObject *last_actor = NULL;
    Py_ssize_t last_actor_start = 0, last_actor_len = -1;
    PyObject *values[N_SLOTS] = {NULL, NULL, NULL, NULL, NULL, NULL};

    for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
        Py_ssize_t start, len;
        uint64_t ts, counter, tag, seq;

        if (read_span(data, size, &pos, &start, &len) < 0) {
            goto irregular;
        }
        values[0] = utf8(data, start, len);
        if (values[0] == NULL) {
            goto failed;
        }
        if (read_varint(data, size, &pos, 10, UINT64_MAX, &ts) < 0 ||
            read_varint(data, size, &pos, 5, 0xFFFFFFFFu, &counter) < 0 ||
            read_span(data, size, &pos, &start, &len) < 0) {
            goto irregular;
        }
        if (last_actor != NULL && len == last_actor_len &&
            memcmp(data + start, data + last_actor_start, (size_t)len) == 0) {
            Py_INCREF(last_actor);
            values[3] = last_actor;
        }
        else {
            values[3] = utf8(data, start, len);
            if (values[3] == NULL) {
                goto failed;
            }
            Py_XDECREF(last_actor);
            Py_INCREF(values[3]);
            last_actor = values[3];
            last_actor_start = start;
            last_actor_len = len;
        }
        if (pos >= size) {
            goto irregular;
        }
        tag = data[pos++]; /* one byte, as the Python fast path: anything else is strict's */
        if (tag == OP_SET) {
            if (read_span(data, size, &pos, &start, &len) < 0) {
                goto irregular;
            }
            values[4] = PyBytes_FromStringAndSize((const char *)data + start, len);
            if (values[4] == NULL) {
                goto failed;
            }
        }
        else if (tag == OP_DELETE) {
            Py_INCREF(Py_None);
            values[4] = Py_None;
        }
        else {
            goto irregular;
        }
        if (pos >= size) {
            goto irregular;
        }
        tag = data[pos++];
        if (tag == 0) {
            Py_INCREF(Py_None);
            values[5] = Py_None;
        }
        else if (tag == 1) {
            if (read_varint(data, size, &pos, 10, UINT64_MAX, &seq) < 0) {
                goto irregular;
            }
            values[5] = PyLong_FromUnsignedLongLong(seq);
            if (values[5] == NULL) {
                goto failed;
            }
        }
        else {
            goto irregular;
        }
        values[1] = PyLong_FromUnsignedLongLong(ts);
        values[2] = PyLong_FromUnsignedLongLong(counter);
        if (values[1] == NULL || values[2] == NULL) {
            goto failed;
        }
        PyObject *change = change_type->tp_alloc(change_type, 0);
        if (change == NULL) {
            goto failed;
        }
        if (fill(change, values) < 0) {
            Py_DECREF(change);
            goto failed;
        }
        /* Its slots hold only str, int, bytes and None, so it can never be part of a
         * reference cycle: untracked, as CPython untracks tuples of such objects. A
         * catch-up of 100,000 tracked objects would otherwise run the cyclic collector
         * over the growing list again and again (4-5x the decoding itself). */
        if (PyObject_IS_GC(change)) {
            PyObject_GC_UnTrack(change);
        }
        for (int k = 0; k < N_SLOTS; k++) {
            Py_CLEAR(values[k]);
        }
        PyList_SET_ITEM(out, i, change); /* steals the reference */
    }
    Py_XDECREF(last_actor);
    if (pos != size) {
        Py_DECREF(out);
        Py_RETURN_NONE; /* trailing bytes */
    }
    return out;

irregular:
    for (int k = 0; k < N_SLOTS; k++) {
        Py_CLEAR(values[k]);
    }
    Py_XDECREF(last_actor);
    Py_DECREF(out); /* items not yet set are NULL, which list_dealloc skips */
    Py_RETURN_NONE;

failed:
    for (int k = 0; k < N_SLOTS; k++) {
        Py_CLEAR(values[k]);
    }
    Py_XDECREF(last_actor);
    Py_DECREF(out);
    if (PyErr_Occurred()) {
        return NULL; /* a real failure (memory) */
    }
    Py_RETURN_NONE; /* invalid UTF-8: the strict reader explains it */
}

static PyObject *
decode_pack(PyObject *self, PyObject *arg)
{
    if (change_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_postcard_c.setup() was not called");
        return NULL;
    }
    if (PyBytes_CheckExact(arg)) {
        return decode((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg));
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = decode((const unsigned char *)view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
setup(PyObject *self, PyObject *args)
{
    PyObject *type, *descriptors;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyTuple_Type, &descriptors)) {
        return NULL;
    }
    if (PyTuple_GET_SIZE(descriptors) != N_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "setup() takes the 6 slot descriptors of Change");
        return NULL;
    }
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = PyTuple_GET_ITEM(descriptors, i);
        if (Py_TYPE(d)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "a slot descriptor has no __set__");
            return NULL;
        }
    }
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = PyTuple_GET_ITEM(descriptors, i);
        Py_INCREF(d);
        Py_XSETREF(slot_descr[i], d);
    }
    Py_INCREF(type);
    Py_XSETREF(change_type, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode_pack", decode_pack, METH_O,
     "decode_pack(data) -> list[Change] | None: the Pack's changes, or None when the "
     "input is irregular in any way (the strict reader then explains it)."},
    {"setup", setup, METH_VARARGS,
     "setup(Change, descriptors): the type to build and its 6 slot descriptors "
     "(path, ts, counter, actor, value, seq)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_postcard_c",
    "The hot path of roomsync.core.postcard.decode_pack, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__postcard_c(void)
{
    return PyModule_Create(&module);
}
