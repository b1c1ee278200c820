/*
 * roomsync.core._postcard_c: the hot paths of roomsync.core.postcard (decode_pack and
 * encode_pack) in C.
 *
 * Same format and the same checks as postcard._decode_pack_fast (SPEC section 2):
 *
 *     struct Pack   { changes: Vec<Change> }
 *     struct Change { path: String, ts: u64, counter: u32, actor: String, op: Op,
 *                     seq: Option<u64> }
 *     enum   Op     { Set(Vec<u8>) = 0, Delete = 1 }
 *
 * encode_pack(changes, seqs) writes a list or tuple of Change as Pack bytes, or returns
 * None when anything is irregular (not exactly a Change, an int out of range, a str that
 * has no UTF-8, a value that is not bytes): the Python encoder then raises its error.
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

/* -- encoding ---------------------------------------------------------------------------- */

/* A growing output buffer (PyMem). */
typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
} Buf;

static int
reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    unsigned char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Appends a LEB128 varint (room for 10 bytes reserved by the caller). */
static void
put_varint(Buf *b, uint64_t v)
{
    while (v >= 0x80) {
        b->data[b->len++] = (unsigned char)((v & 0x7F) | 0x80);
        v >>= 7;
    }
    b->data[b->len++] = (unsigned char)v;
}

/* Appends varint(len) + the bytes. 0, or -1 with an error set. */
static int
put_span(Buf *b, const char *data, Py_ssize_t len)
{
    if (reserve(b, 10 + len) < 0) {
        return -1;
    }
    put_varint(b, (uint64_t)len);
    memcpy(b->data + b->len, data, (size_t)len);
    b->len += len;
    return 0;
}

/* A slot's value (new reference), or NULL with the error cleared when it is unset. */
static PyObject *
slot(int i, PyObject *change)
{
    PyObject *v = Py_TYPE(slot_descr[i])->tp_descr_get(slot_descr[i], change,
                                                      (PyObject *)change_type);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
    }
    return v;
}

/* An int in [0, max]; -1 (error cleared) when it is not an int or out of range. */
static int
as_u64(PyObject *v, uint64_t max, uint64_t *out)
{
    if (!PyLong_Check(v)) {
        return -1;
    }
    uint64_t x = PyLong_AsUnsignedLongLong(v);
    if (x == (uint64_t)-1 && PyErr_Occurred()) {
        PyErr_Clear(); /* negative or past u64 */
        return -1;
    }
    if (x > max) {
        return -1;
    }
    *out = x;
    return 0;
}

/* UTF-8 of a str (borrowed from the str's cache); NULL, error cleared, when it has none. */
static const char *
utf8_of(PyObject *v, Py_ssize_t *len)
{
    if (!PyUnicode_Check(v)) {
        return NULL;
    }
    const char *s = PyUnicode_AsUTF8AndSize(v, len);
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear(); /* a lone surrogate: the Python encoder raises the error */
    }
    return s;
}

/* Writes one Change. 1 written, 0 irregular (the Python encoder decides), -1 error. */
static int
put_change(Buf *b, PyObject *change, int seqs)
{
    PyObject *v[N_SLOTS] = {NULL, NULL, NULL, NULL, NULL, NULL};
    int result = 0;
    uint64_t ts, counter, seq = 0;
    Py_ssize_t plen, alen;
    const char *path, *actor;
    int has_seq;

    for (int i = 0; i < N_SLOTS; i++) {
        v[i] = slot(i, change);
        if (v[i] == NULL) {
            result = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
    }
    if (as_u64(v[1], UINT64_MAX, &ts) < 0 || as_u64(v[2], 0xFFFFFFFFu, &counter) < 0) {
        goto done;
    }
    has_seq = seqs && v[5] != Py_None;
    if (has_seq && as_u64(v[5], UINT64_MAX, &seq) < 0) {
        goto done;
    }
    if (v[4] != Py_None && !PyBytes_Check(v[4])) {
        goto done; /* another bytes-like value: the Python encoder takes it */
    }
    path = utf8_of(v[0], &plen);
    if (path == NULL) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    actor = utf8_of(v[3], &alen);
    if (actor == NULL) {
        result = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (put_span(b, path, plen) < 0 || reserve(b, 20) < 0) {
        result = -1;
        goto done;
    }
    put_varint(b, ts);
    put_varint(b, counter);
    if (put_span(b, actor, alen) < 0) {
        result = -1;
        goto done;
    }
    if (v[4] == Py_None) {
        if (reserve(b, 1) < 0) {
            result = -1;
            goto done;
        }
        b->data[b->len++] = OP_DELETE;
    }
    else {
        if (reserve(b, 1) < 0 ||
            (b->data[b->len++] = OP_SET,
             put_span(b, PyBytes_AS_STRING(v[4]), PyBytes_GET_SIZE(v[4])) < 0)) {
            result = -1;
            goto done;
        }
    }
    if (reserve(b, 11) < 0) {
        result = -1;
        goto done;
    }
    if (has_seq) {
        b->data[b->len++] = 1;
        put_varint(b, seq);
    }
    else {
        b->data[b->len++] = 0;
    }
    result = 1;
done:
    for (int i = 0; i < N_SLOTS; i++) {
        Py_XDECREF(v[i]);
    }
    return result;
}

static PyObject *
encode_pack(PyObject *self, PyObject *args)
{
    PyObject *changes;
    int seqs = 1;
    if (!PyArg_ParseTuple(args, "O|p", &changes, &seqs)) {
        return NULL;
    }
    if (change_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_postcard_c.setup() was not called");
        return NULL;
    }
    if (!PyList_CheckExact(changes) && !PyTuple_CheckExact(changes)) {
        Py_RETURN_NONE;
    }
    PyObject *fast = PySequence_Fast(changes, "changes"); /* new ref, the same object */
    if (fast == NULL) {
        return NULL;
    }
    Buf b = {NULL, 0, 0};
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (reserve(&b, 10 + n * 32) < 0) {
        goto out;
    }
    put_varint(&b, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        /* A list may change while its items' attributes are read: index it each time. */
        if (i >= PySequence_Fast_GET_SIZE(fast)) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto out;
        }
        PyObject *change = PySequence_Fast_GET_ITEM(fast, i);
        if (Py_TYPE(change) != change_type) {
            Py_INCREF(Py_None);
            result = Py_None; /* a subclass or another type: the Python encoder decides */
            goto out;
        }
        Py_INCREF(change);
        int put = put_change(&b, change, seqs);
        Py_DECREF(change);
        if (put < 0) {
            goto out;
        }
        if (put == 0) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto out;
        }
    }
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        Py_INCREF(Py_None);
        result = Py_None; /* the list changed length: its count is stale */
        goto out;
    }
    result = PyBytes_FromStringAndSize((const char *)b.data, b.len);
out:
    PyMem_Free(b.data);
    Py_DECREF(fast);
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
    {"encode_pack", encode_pack, METH_VARARGS,
     "encode_pack(changes, seqs=True) -> bytes | None: Pack bytes of a list or tuple of "
     "Change, or None when anything is irregular (the Python encoder then raises)."},
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
