/* keel.traces._otlp_wire: the fast path for decoding OTLP ExportTraceServiceRequest bodies.
 *
 * It reads the protobuf wire format directly and builds the very objects the reference decoder
 * in otlp.py (`_pb_spans`, over upb's message classes) yields, with the same caps, markers and
 * dropped counts. The reference stays the oracle: for any body outside the simple, canonical
 * subset handled here (a wire-format error, invalid UTF-8, a known field with an unexpected wire
 * type, a singular message field sent twice, a span the reference would reject, values nested
 * too deeply...) `decode_spans` returns None and the caller runs the reference instead. Every
 * doubt resolves to FALLBACK, never to a guess.
 *
 * Every decoding function returns DECODED, FALLBACK or FAILED (a Python exception is set: only
 * MemoryError, in practice) and has a single cleanup path, `done`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_span_map.h"

enum { DECODED = 0, FALLBACK = 1, FAILED = -1 };

/* Arrays and kvlists nested deeper than this are left to the reference (and to upb's own
 * recursion limit of 100 messages: a value at this depth is at most 7 + 3 * 16 messages deep). */
#define MAX_VALUE_NESTING 16

/* -- the wire format ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *at;
    const uint8_t *end;
} Cursor;

/* An empty slice where `c` starts: what an absent bytes field reads as (never NULL pointers,
 * whose difference C leaves undefined). */
static Cursor
empty_at(Cursor c)
{
    Cursor empty = {c.at, c.at};
    return empty;
}

/* How a field's value is encoded: the wire types this decoder accepts. Groups (wire types 3
 * and 4) and the undefined types 6 and 7 are wire errors here. UNKNOWN marks, in a message's
 * schema table below, a field number the message does not define. */
enum { UNKNOWN = 0, VARINT, I64, LEN, I32 };

typedef struct {
    uint32_t number;
    int wire;        /* VARINT, I64, LEN or I32 */
    uint64_t scalar; /* the value of a VARINT, I64 or I32 field */
    Cursor payload;  /* the bytes of a LEN field */
} Field;

/* A varint of at most 10 bytes; 0 when it is truncated or does not fit 64 bits (upb drops the
 * excess bits of a tenth byte; such bodies are left to it). */
static int
read_varint(Cursor *c, uint64_t *out)
{
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->at == c->end)
            return 0;
        uint8_t byte = *c->at++;
        if (shift == 63 && byte > 1)
            return 0;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 1;
        }
    }
    return 0;
}

/* A tag or a length: upb reads those as varints of at most 5 bytes, within 32 bits. */
static int
read_varint32(Cursor *c, uint64_t *out)
{
    const uint8_t *start = c->at;
    return read_varint(c, out) && c->at - start <= 5 && *out <= UINT32_MAX;
}

/* A little-endian fixed32 or fixed64. */
static int
read_fixed(Cursor *c, int size, uint64_t *out)
{
    if (c->end - c->at < size)
        return 0;
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--)
        value = (value << 8) | c->at[i];
    c->at += size;
    *out = value;
    return 1;
}

/* The next field of a message: 1 when read, 0 at the end, -1 on a wire-format error. */
static int
next_field(Cursor *c, Field *f)
{
    uint64_t tag, size;
    if (c->at == c->end)
        return 0;
    if (!read_varint32(c, &tag) || tag >> 3 == 0)
        return -1;
    f->number = (uint32_t)(tag >> 3);
    switch (tag & 7) {
    case 0:
        f->wire = VARINT;
        return read_varint(c, &f->scalar) ? 1 : -1;
    case 1:
        f->wire = I64;
        return read_fixed(c, 8, &f->scalar) ? 1 : -1;
    case 2:
        f->wire = LEN;
        if (!read_varint32(c, &size) || size > (uint64_t)(c->end - c->at))
            return -1;
        f->payload.at = c->at;
        f->payload.end = c->at + size;
        c->at += size;
        return 1;
    case 5:
        f->wire = I32;
        return read_fixed(c, 4, &f->scalar) ? 1 : -1;
    default:
        return -1;
    }
}

/* The next field the message's schema (its wire type by field number) knows: 1 when read, 0 at
 * the end, -1 for FALLBACK: a wire-format error, or a known field with another wire type (upb
 * would keep it as an unknown field; left to it). Unknown fields are skipped, as protobuf does. */
static int
next_known(Cursor *c, const uint8_t *schema, size_t count, Field *f)
{
    int got;
    while ((got = next_field(c, f)) > 0) {
        uint8_t wire = f->number < count ? schema[f->number] : UNKNOWN;
        if (wire == f->wire)
            return 1;
        if (wire != UNKNOWN)
            return -1;
    }
    return got;
}

#define NEXT(cursor, schema, field) next_known(cursor, schema, sizeof(schema), field)

/* The schemas of the messages decoded, from opentelemetry/proto (otlp.py checks at import that
 * the installed one defines no other field: a new field must be taught here first). */
static const uint8_t REQUEST[] = {[1] = LEN /* resource_spans */};
static const uint8_t RESOURCE_SPANS[] = {
    [1] = LEN /* resource */, [2] = LEN /* scope_spans */, [3] = LEN /* schema_url */};
static const uint8_t RESOURCE[] = {
    [1] = LEN /* attributes */, [2] = VARINT /* dropped_attributes_count */,
    [3] = LEN /* entity_refs */};
static const uint8_t SCOPE_SPANS[] = {
    [1] = LEN /* scope */, [2] = LEN /* spans */, [3] = LEN /* schema_url */};
static const uint8_t SCOPE[] = {
    [1] = LEN /* name */, [2] = LEN /* version */, [3] = LEN /* attributes */,
    [4] = VARINT /* dropped_attributes_count */};
static const uint8_t SPAN[] = {
    [1] = LEN /* trace_id */, [2] = LEN /* span_id */, [3] = LEN /* trace_state */,
    [4] = LEN /* parent_span_id */, [5] = LEN /* name */, [6] = VARINT /* kind */,
    [7] = I64 /* start_time_unix_nano */, [8] = I64 /* end_time_unix_nano */,
    [9] = LEN /* attributes */, [10] = VARINT /* dropped_attributes_count */,
    [11] = LEN /* events */, [12] = VARINT /* dropped_events_count */, [13] = LEN /* links */,
    [14] = VARINT /* dropped_links_count */, [15] = LEN /* status */, [16] = I32 /* flags */};
static const uint8_t EVENT[] = {
    [1] = I64 /* time_unix_nano */, [2] = LEN /* name */, [3] = LEN /* attributes */,
    [4] = VARINT /* dropped_attributes_count */};
static const uint8_t LINK[] = {
    [1] = LEN /* trace_id */, [2] = LEN /* span_id */, [3] = LEN /* trace_state */,
    [4] = LEN /* attributes */, [5] = VARINT /* dropped_attributes_count */, [6] = I32 /* flags */};
static const uint8_t STATUS[] = {[2] = LEN /* message */, [3] = VARINT /* code */};
static const uint8_t KEY_VALUE[] = {
    [1] = LEN /* key */, [2] = LEN /* value */, [3] = VARINT /* key_strindex */};
static const uint8_t ANY_VALUE[] = {
    [1] = LEN /* string_value */, [2] = VARINT /* bool_value */, [3] = VARINT /* int_value */,
    [4] = I64 /* double_value */, [5] = LEN /* array_value */, [6] = LEN /* kvlist_value */,
    [7] = LEN /* bytes_value */, [8] = VARINT /* string_value_strindex */};
static const uint8_t VALUES[] = {[1] = LEN /* ArrayValue and KeyValueList: values */};

/* -- the decoder's settings ----------------------------------------------------------------- */

/* Set once by configure() from otlp.py, so the constants live in one place. */
typedef struct {
    PyObject *span_type;  /* OtlpSpan */
    PyObject *event_type; /* OtlpEvent */
    PyObject *truncated_marker;
    PyObject *deep_marker;
    Py_ssize_t max_depth;
    Py_ssize_t max_key_length;
    Py_ssize_t scope_length;      /* of the scope's name and version */
    Py_ssize_t event_name_length;
    PyObject *trace_id_key; /* a link's dict keys */
    PyObject *span_id_key;
    PyObject *attributes_key;
    MapConfig map; /* _span_map.c's, set by configure_mapping() */
} State;

/* Attribute keys repeat in every span of a body: each is decoded once per body and reused, its
 * hash computed once (a str caches it) for all the dicts. A direct-mapped cache, by the bytes. */
#define KEY_CACHE_SIZE 256

typedef struct {
    Cursor raw;     /* the key's bytes, in the body */
    PyObject *text; /* NULL: an empty slot */
} CachedKey;

/* One call's settings (the module's, and the caller's Limits) and its key cache. */
typedef struct {
    const State *state;
    Py_ssize_t max_value_length;
    Py_ssize_t max_attributes;
    Py_ssize_t max_events;
    CachedKey *keys; /* KEY_CACHE_SIZE slots */
    /* decode_rows: each span goes straight to its row (no OtlpSpan), repeats left out */
    const MapOptions *map_options; /* NULL: decode_spans */
    PyObject *seen;                /* (trace_id, span_id) of the rows made */
    Py_ssize_t *span_count;        /* spans decoded, repeats included */
} Decoder;

/* -- values --------------------------------------------------------------------------------- */

/* For a failed UTF-8 decoding: FALLBACK (upb rejects invalid UTF-8 in a string field), or
 * FAILED when the failure was something else (MemoryError). */
static int
not_utf8(void)
{
    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        return FAILED;
    PyErr_Clear();
    return FALLBACK;
}

/* `text` (stolen) cut to `limit` characters and marked, as the reference's `_cut`. */
static PyObject *
cut(PyObject *text, Py_ssize_t limit, PyObject *marker)
{
    if (PyUnicode_GET_LENGTH(text) <= limit)
        return text;
    PyObject *head = PyUnicode_Substring(text, 0, limit);
    Py_DECREF(text);
    if (head == NULL)
        return NULL;
    PyObject *out = PyUnicode_Concat(head, marker);
    Py_DECREF(head);
    return out;
}

/* A string field's text, cut to `limit` characters (Python's decoder and upb's check accept
 * exactly the same, well-formed UTF-8). */
static int
decode_text(const Decoder *d, Cursor raw, Py_ssize_t limit, PyObject **out)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)raw.at, raw.end - raw.at, NULL);
    if (text == NULL)
        return not_utf8();
    *out = cut(text, limit, d->state->truncated_marker);
    return *out == NULL ? FAILED : DECODED;
}

/* An attribute key, cut to the key length: from the cache when the body sent it before. */
static int
decode_key(const Decoder *d, Cursor raw, PyObject **out)
{
    Py_ssize_t size = raw.end - raw.at;
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (const uint8_t *p = raw.at; p < raw.end; p++)
        hash = (hash ^ *p) * 16777619u;
    CachedKey *slot = &d->keys[hash % KEY_CACHE_SIZE];
    if (slot->text != NULL && slot->raw.end - slot->raw.at == size &&
        memcmp(slot->raw.at, raw.at, (size_t)size) == 0) {
        *out = Py_NewRef(slot->text);
        return DECODED;
    }
    int rc = decode_text(d, raw, d->state->max_key_length, out);
    if (rc == DECODED) {
        slot->raw = raw;
        Py_XSETREF(slot->text, Py_NewRef(*out));
    }
    return rc;
}

/* A string field that is not kept (trace_state, schema_url): upb still checks its UTF-8. */
static int
check_text(Cursor raw)
{
    PyObject *text = PyUnicode_DecodeUTF8((const char *)raw.at, raw.end - raw.at, NULL);
    if (text == NULL)
        return not_utf8();
    Py_DECREF(text);
    return DECODED;
}

/* A bytes value as the reference writes it: base64 of its first `max_value_length` bytes, marked
 * when it was longer. */
static PyObject *
base64_text(const Decoder *d, Cursor raw)
{
    static const Py_UCS1 alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    Py_ssize_t size = raw.end - raw.at;
    Py_ssize_t kept = size < d->max_value_length ? size : d->max_value_length;
    PyObject *text = PyUnicode_New(4 * ((kept + 2) / 3), 127);
    if (text == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    const uint8_t *in = raw.at;
    Py_ssize_t i = 0;
    for (; kept - i >= 3; i += 3) {
        uint32_t group = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = alphabet[group >> 18];
        *out++ = alphabet[group >> 12 & 63];
        *out++ = alphabet[group >> 6 & 63];
        *out++ = alphabet[group & 63];
    }
    if (kept - i > 0) { /* one or two bytes left: padded with '=' */
        uint32_t group = (uint32_t)in[i] << 16 | (kept - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = alphabet[group >> 18];
        *out++ = alphabet[group >> 12 & 63];
        *out++ = kept - i == 2 ? alphabet[group >> 6 & 63] : '=';
        *out++ = '=';
    }
    if (size == kept)
        return text;
    PyObject *marked = PyUnicode_Concat(text, d->state->truncated_marker);
    Py_DECREF(text);
    return marked;
}

/* Whether an id is valid, as the reference's `_pb_id` sees it: `size` bytes, not all zero. */
static int
valid_id(Cursor raw, Py_ssize_t size)
{
    if (raw.end - raw.at != size)
        return 0;
    for (const uint8_t *p = raw.at; p < raw.end; p++)
        if (*p)
            return 1;
    return 0;
}

/* `_pb_id`: the lower-case hex of a valid id, else None. */
static PyObject *
hex_id(Cursor raw, Py_ssize_t size)
{
    static const Py_UCS1 digits[] = "0123456789abcdef";
    if (!valid_id(raw, size))
        Py_RETURN_NONE;
    PyObject *text = PyUnicode_New(2 * size, 127);
    if (text == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (const uint8_t *p = raw.at; p < raw.end; p++) {
        *out++ = digits[*p >> 4];
        *out++ = digits[*p & 15];
    }
    return text;
}

static int decode_value(const Decoder *d, Cursor c, Py_ssize_t depth, PyObject **out);

/* A KeyValue, set in `into` unless `*count` attributes were read already (the cap): later
 * pairs are still decoded, as upb parses them all. */
static int
add_attribute(const Decoder *d, Cursor c, Py_ssize_t depth, PyObject *into, Py_ssize_t *count)
{
    PyObject *key = NULL, *value = NULL, *text;
    Field f;
    int got, rc = FALLBACK;
    while ((got = NEXT(&c, KEY_VALUE, &f)) > 0) {
        switch (f.number) {
        case 1: /* key: the last one sent wins */
            if ((rc = decode_key(d, f.payload, &text)) != DECODED)
                goto done;
            Py_XSETREF(key, text);
            break;
        case 2: /* value: a second one would be merged into the first by protobuf */
            if (value != NULL) {
                rc = FALLBACK;
                goto done;
            }
            if ((rc = decode_value(d, f.payload, depth, &value)) != DECODED)
                goto done;
            break;
        }
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if (key == NULL && (key = PyUnicode_FromStringAndSize("", 0)) == NULL)
        goto done;
    if (*count < d->max_attributes &&
        PyDict_SetItem(into, key, value == NULL ? Py_None : value) < 0)
        goto done;
    ++*count;
    rc = DECODED;
done:
    Py_XDECREF(key);
    Py_XDECREF(value);
    return rc;
}

/* A list of KeyValue (`values` of a KeyValueList) as the reference's `_pb_attributes` dict. */
static int
decode_kvlist(const Decoder *d, Cursor c, Py_ssize_t depth, PyObject **out)
{
    PyObject *attributes = PyDict_New();
    Py_ssize_t count = 0;
    Field f;
    int got, rc = FAILED;
    if (attributes == NULL)
        goto done;
    while ((got = NEXT(&c, VALUES, &f)) > 0)
        if ((rc = add_attribute(d, f.payload, depth, attributes, &count)) != DECODED)
            goto done;
    rc = FALLBACK;
    if (got < 0)
        goto done;
    *out = Py_NewRef(attributes);
    rc = DECODED;
done:
    Py_XDECREF(attributes);
    return rc;
}

/* An ArrayValue: its first `max_attributes` values (the others decoded all the same). */
static int
decode_array(const Decoder *d, Cursor c, Py_ssize_t depth, PyObject **out)
{
    PyObject *items = PyList_New(0), *item = NULL;
    Field f;
    int got, rc = FAILED;
    if (items == NULL)
        goto done;
    while ((got = NEXT(&c, VALUES, &f)) > 0) {
        if ((rc = decode_value(d, f.payload, depth, &item)) != DECODED)
            goto done;
        rc = FAILED;
        if (PyList_GET_SIZE(items) < d->max_attributes && PyList_Append(items, item) < 0)
            goto done;
        Py_CLEAR(item);
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    *out = Py_NewRef(items);
    rc = DECODED;
done:
    Py_XDECREF(items);
    Py_XDECREF(item);
    return rc;
}

/* One member of AnyValue's oneof as `_pb_value` makes it at `depth` (before DEEP_MARKER). */
static int
decode_member(const Decoder *d, const Field *f, Py_ssize_t depth, PyObject **out)
{
    double number;
    switch (f->number) {
    case 1: /* string_value */
        return decode_text(d, f->payload, d->max_value_length, out);
    case 2: /* bool_value: any non-zero varint is true */
        *out = PyBool_FromLong(f->scalar != 0);
        return DECODED;
    case 3: /* int_value: int64, two's complement */
        *out = PyLong_FromLongLong((long long)(int64_t)f->scalar);
        break;
    case 4: /* double_value: the little-endian bits of an IEEE double (NaN and inf kept) */
        memcpy(&number, &f->scalar, sizeof number);
        *out = PyFloat_FromDouble(number);
        break;
    case 5: /* array_value */
        return decode_array(d, f->payload, depth + 1, out);
    case 6: /* kvlist_value */
        return decode_kvlist(d, f->payload, depth + 1, out);
    case 7: /* bytes_value */
        *out = base64_text(d, f->payload);
        break;
    default: /* string_value_strindex: the reference has no case for it */
        return FALLBACK;
    }
    return *out == NULL ? FAILED : DECODED;
}

/* An AnyValue as the reference's `_pb_value` returns it at `depth`: None when no member is
 * set. Protobuf keeps the last member of the oneof sent, so each one read replaces the value so
 * far; each is decoded all the same, as upb checks them all. */
static int
decode_value(const Decoder *d, Cursor c, Py_ssize_t depth, PyObject **out)
{
    PyObject *value = NULL, *member_value;
    uint32_t member = 0; /* the field number of the member set last */
    Field f;
    int got, rc = FALLBACK;
    if (depth > MAX_VALUE_NESTING)
        goto done;
    while ((got = NEXT(&c, ANY_VALUE, &f)) > 0) {
        /* The same message member twice in a row: protobuf would merge the two. */
        if ((f.number == 5 || f.number == 6) && f.number == member) {
            rc = FALLBACK;
            goto done;
        }
        if ((rc = decode_member(d, &f, depth, &member_value)) != DECODED)
            goto done;
        Py_XSETREF(value, member_value);
        member = f.number;
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    if (value == NULL)
        value = Py_NewRef(Py_None);
    else if (depth >= d->state->max_depth && member >= 5) /* array, kvlist, bytes */
        Py_SETREF(value, Py_NewRef(d->state->deep_marker));
    *out = Py_NewRef(value);
    rc = DECODED;
done:
    Py_XDECREF(value);
    return rc;
}

/* -- spans ---------------------------------------------------------------------------------- */

/* A Status's code (an open enum: any int32 is kept) and message. */
static int
decode_status(const Decoder *d, Cursor c, int32_t *code, PyObject **message)
{
    PyObject *text;
    Field f;
    int got, rc;
    while ((got = NEXT(&c, STATUS, &f)) > 0) {
        if (f.number == 3) {
            *code = (int32_t)(uint32_t)f.scalar; /* int32: the varint's low 32 bits */
            continue;
        }
        if ((rc = decode_text(d, f.payload, PY_SSIZE_T_MAX, &text)) != DECODED)
            return rc;
        Py_XSETREF(*message, text);
    }
    return got < 0 ? FALLBACK : DECODED;
}

/* A span's event as an OtlpEvent. */
static int
decode_event(const Decoder *d, Cursor c, PyObject **out)
{
    PyObject *name = NULL, *time = NULL, *attributes = PyDict_New(), *text, *args[3];
    uint64_t time_ns = 0;
    Py_ssize_t count = 0;
    Field f;
    int got, rc = FAILED;
    if (attributes == NULL)
        goto done;
    while ((got = NEXT(&c, EVENT, &f)) > 0) {
        switch (f.number) {
        case 1:
            time_ns = f.scalar;
            break;
        case 2:
            if ((rc = decode_text(d, f.payload, d->state->event_name_length, &text)) != DECODED)
                goto done;
            Py_XSETREF(name, text);
            break;
        case 3:
            if ((rc = add_attribute(d, f.payload, 0, attributes, &count)) != DECODED)
                goto done;
            break;
        }
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if (name == NULL && (name = PyUnicode_FromStringAndSize("", 0)) == NULL)
        goto done;
    if ((time = PyLong_FromUnsignedLongLong(time_ns)) == NULL)
        goto done;
    args[0] = name;
    args[1] = time;
    args[2] = attributes;
    if ((*out = PyObject_Vectorcall(d->state->event_type, args, 3, NULL)) == NULL)
        goto done;
    rc = DECODED;
done:
    Py_XDECREF(name);
    Py_XDECREF(time);
    Py_XDECREF(attributes);
    return rc;
}

/* A span's link as the reference's dict: its ids (None when invalid) and attributes. */
static int
decode_link(const Decoder *d, Cursor c, PyObject **out)
{
    PyObject *link = NULL, *trace_id = NULL, *span_id = NULL, *attributes = PyDict_New();
    Cursor trace_raw = empty_at(c), span_raw = empty_at(c);
    Py_ssize_t count = 0;
    Field f;
    int got, rc = FAILED;
    if (attributes == NULL)
        goto done;
    while ((got = NEXT(&c, LINK, &f)) > 0) {
        switch (f.number) {
        case 1:
            trace_raw = f.payload;
            break;
        case 2:
            span_raw = f.payload;
            break;
        case 3: /* trace_state */
            if ((rc = check_text(f.payload)) != DECODED)
                goto done;
            break;
        case 4:
            if ((rc = add_attribute(d, f.payload, 0, attributes, &count)) != DECODED)
                goto done;
            break;
        }
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if ((trace_id = hex_id(trace_raw, 16)) == NULL || (span_id = hex_id(span_raw, 8)) == NULL)
        goto done;
    if ((link = PyDict_New()) == NULL ||
        PyDict_SetItem(link, d->state->trace_id_key, trace_id) < 0 ||
        PyDict_SetItem(link, d->state->span_id_key, span_id) < 0 ||
        PyDict_SetItem(link, d->state->attributes_key, attributes) < 0)
        goto done;
    *out = Py_NewRef(link);
    rc = DECODED;
done:
    Py_XDECREF(link);
    Py_XDECREF(trace_id);
    Py_XDECREF(span_id);
    Py_XDECREF(attributes);
    return rc;
}

/* Appends `item` (stolen) to `list` while it holds fewer than `cap` items; counts it. */
static int
append_capped(PyObject *list, PyObject *item, Py_ssize_t cap, Py_ssize_t *count)
{
    int failed = ++*count <= cap && PyList_Append(list, item) < 0;
    Py_DECREF(item);
    return failed ? FAILED : DECODED;
}

/* The arguments of OtlpSpan, in the order the reference passes them. */
enum {
    TRACE_ID, SPAN_ID, PARENT_SPAN_ID, NAME, KIND, START_NS, END_NS, STATUS_CODE, STATUS_MESSAGE,
    ATTRIBUTES, SCOPE_ARG, EVENTS, LINKS, DROPPED_ATTRIBUTES, DROPPED_EVENTS, DROPPED_LINKS,
    SPAN_ARGS
};

/* The span's scalars, as read. */
typedef struct {
    Cursor trace_id, span_id, parent_span_id;
    int32_t kind, status_code; /* open enums: any int32 is kept */
    uint64_t start_ns, end_ns;
    uint32_t dropped_attributes, dropped_events, dropped_links; /* as the sender counted */
    Py_ssize_t attribute_count, event_count, link_count;        /* as sent */
    int has_status;
} SpanFields;

/* A dropped count: the sender's, plus how many of `count` items the cap left out. */
static PyObject *
dropped(uint32_t sender, Py_ssize_t count, Py_ssize_t cap)
{
    return PyLong_FromLongLong((long long)sender + (count > cap ? count - cap : 0));
}

/* Completes args[] once the span's fields are read (args[] holds the objects decoded). */
static int
span_args(const Decoder *d, const SpanFields *s, PyObject **args)
{
    if (args[NAME] == NULL && (args[NAME] = PyUnicode_FromStringAndSize("", 0)) == NULL)
        return FAILED;
    if (args[STATUS_MESSAGE] == NULL &&
        (args[STATUS_MESSAGE] = PyUnicode_FromStringAndSize("", 0)) == NULL)
        return FAILED;
    if ((args[TRACE_ID] = hex_id(s->trace_id, 16)) == NULL ||
        (args[SPAN_ID] = hex_id(s->span_id, 8)) == NULL ||
        (args[PARENT_SPAN_ID] = hex_id(s->parent_span_id, 8)) == NULL ||
        (args[KIND] = PyLong_FromLong(s->kind)) == NULL ||
        (args[START_NS] = PyLong_FromUnsignedLongLong(s->start_ns)) == NULL ||
        (args[END_NS] = PyLong_FromUnsignedLongLong(s->end_ns)) == NULL ||
        (args[STATUS_CODE] = PyLong_FromLong(s->status_code)) == NULL ||
        (args[DROPPED_ATTRIBUTES] =
             dropped(s->dropped_attributes, s->attribute_count, d->max_attributes)) == NULL ||
        (args[DROPPED_EVENTS] = dropped(s->dropped_events, s->event_count, d->max_events)) ==
            NULL ||
        (args[DROPPED_LINKS] = dropped(s->dropped_links, s->link_count, d->max_events)) == NULL)
        return FAILED;
    return DECODED;
}

/* What a decoded span becomes: an OtlpSpan (decode_spans), or its row (decode_rows; NULL for
 * a repeat of a span of the same export). */
static int
build_span(const Decoder *d, const SpanFields *s, PyObject **args, PyObject **out)
{
    *out = NULL;
    if (span_args(d, s, args) != DECODED)
        return FAILED;
    if (d->map_options == NULL) {
        *out = PyObject_Vectorcall(d->state->span_type, args, SPAN_ARGS, NULL);
        return *out == NULL ? FAILED : DECODED;
    }
    ++*d->span_count;
    int first = first_copy(d->seen, args[TRACE_ID], args[SPAN_ID]);
    if (first <= 0)
        return first < 0 ? FAILED : DECODED;
    /* the times as OtlpSpan's `start_ns / 1e9`: both conversions round to the nearest double */
    SpanView view = {
        args[TRACE_ID], args[SPAN_ID], args[PARENT_SPAN_ID], args[NAME], args[KIND],
        (double)s->start_ns / 1e9, (double)s->end_ns / 1e9, args[STATUS_CODE],
        args[STATUS_MESSAGE], args[ATTRIBUTES], args[SCOPE_ARG], args[EVENTS], args[LINKS],
        args[DROPPED_ATTRIBUTES], args[DROPPED_EVENTS], args[DROPPED_LINKS]};
    *out = map_view(&d->state->map, d->map_options, &view);
    return *out == NULL ? FAILED : DECODED;
}

/* Reads one field of a span into `s` and `args`. */
static int
read_span_field(const Decoder *d, const Field *f, SpanFields *s, PyObject **args)
{
    PyObject *item;
    int rc;
    switch (f->number) {
    case 1:
        s->trace_id = f->payload;
        return DECODED;
    case 2:
        s->span_id = f->payload;
        return DECODED;
    case 3: /* trace_state */
        return check_text(f->payload);
    case 4:
        s->parent_span_id = f->payload;
        return DECODED;
    case 5: /* name: never cut */
        if ((rc = decode_text(d, f->payload, PY_SSIZE_T_MAX, &item)) == DECODED)
            Py_XSETREF(args[NAME], item);
        return rc;
    case 6: /* kind: int32, the varint's low 32 bits */
        s->kind = (int32_t)(uint32_t)f->scalar;
        return DECODED;
    case 7:
        s->start_ns = f->scalar;
        return DECODED;
    case 8:
        s->end_ns = f->scalar;
        return DECODED;
    case 9: /* attributes: over the resource's (args[ATTRIBUTES] is a copy of them) */
        return add_attribute(d, f->payload, 0, args[ATTRIBUTES], &s->attribute_count);
    case 10: /* the dropped counts are uint32: the varint's low 32 bits */
        s->dropped_attributes = (uint32_t)f->scalar;
        return DECODED;
    case 11:
        if ((rc = decode_event(d, f->payload, &item)) != DECODED)
            return rc;
        return append_capped(args[EVENTS], item, d->max_events, &s->event_count);
    case 12:
        s->dropped_events = (uint32_t)f->scalar;
        return DECODED;
    case 13:
        if ((rc = decode_link(d, f->payload, &item)) != DECODED)
            return rc;
        return append_capped(args[LINKS], item, d->max_events, &s->link_count);
    case 14:
        s->dropped_links = (uint32_t)f->scalar;
        return DECODED;
    case 15: /* status: a second one would be merged into the first by protobuf */
        if (s->has_status)
            return FALLBACK;
        s->has_status = 1;
        return decode_status(d, f->payload, &s->status_code, &args[STATUS_MESSAGE]);
    default: /* flags */
        return DECODED;
    }
}

/* A span as the reference's `_pb_span` makes it, appended to `spans`. A span the reference
 * rejects (bad ids) is left to it, with its partial-success message. */
static int
decode_span(const Decoder *d, Cursor c, PyObject *resource, PyObject *scope, PyObject *spans)
{
    PyObject *args[SPAN_ARGS] = {NULL}, *span = NULL;
    SpanFields s = {.trace_id = empty_at(c), .span_id = empty_at(c), .parent_span_id = empty_at(c)};
    Field f;
    int got, rc = FAILED;
    args[SCOPE_ARG] = Py_NewRef(scope);
    if ((args[ATTRIBUTES] = PyDict_Copy(resource)) == NULL ||
        (args[EVENTS] = PyList_New(0)) == NULL || (args[LINKS] = PyList_New(0)) == NULL)
        goto done;
    while ((got = NEXT(&c, SPAN, &f)) > 0)
        if ((rc = read_span_field(d, &f, &s, args)) != DECODED)
            goto done;
    rc = FALLBACK;
    if (got < 0 || !valid_id(s.trace_id, 16) || !valid_id(s.span_id, 8))
        goto done;
    /* A parent id is 8 bytes, or none (a root); 8 zero bytes give None, as in the reference. */
    if (s.parent_span_id.end != s.parent_span_id.at &&
        s.parent_span_id.end - s.parent_span_id.at != 8)
        goto done;
    if ((rc = build_span(d, &s, args, &span)) != DECODED)
        goto done;
    rc = span != NULL && PyList_Append(spans, span) < 0 ? FAILED : DECODED;
done:
    for (int i = 0; i < SPAN_ARGS; i++)
        Py_XDECREF(args[i]);
    Py_XDECREF(span);
    return rc;
}

/* An InstrumentationScope as the reference's (name, version) tuple, both cut. */
static int
decode_scope(const Decoder *d, Cursor c, PyObject **out)
{
    PyObject *name = NULL, *version = NULL, *text, *ignored = PyDict_New();
    Py_ssize_t count = 0;
    Field f;
    int got, rc = FAILED;
    if (ignored == NULL)
        goto done;
    while ((got = NEXT(&c, SCOPE, &f)) > 0) {
        switch (f.number) {
        case 1:
        case 2:
            if ((rc = decode_text(d, f.payload, d->state->scope_length, &text)) != DECODED)
                goto done;
            Py_XSETREF(*(f.number == 1 ? &name : &version), text);
            break;
        case 3: /* attributes: not kept, but upb parses them */
            if ((rc = add_attribute(d, f.payload, 0, ignored, &count)) != DECODED)
                goto done;
            break;
        }
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if ((name == NULL && (name = PyUnicode_FromStringAndSize("", 0)) == NULL) ||
        (version == NULL && (version = PyUnicode_FromStringAndSize("", 0)) == NULL) ||
        (*out = PyTuple_Pack(2, name, version)) == NULL)
        goto done;
    rc = DECODED;
done:
    Py_XDECREF(name);
    Py_XDECREF(version);
    Py_XDECREF(ignored);
    return rc;
}

/* A ScopeSpans' spans, appended to `spans`. */
static int
decode_scope_spans(const Decoder *d, Cursor c, PyObject *resource, PyObject *spans)
{
    PyObject *scope = NULL;
    Cursor pass = c;
    Field f;
    int got, rc = FALLBACK;
    /* First the scope, which every span holds: it may follow the spans on the wire. */
    while ((got = NEXT(&pass, SCOPE_SPANS, &f)) > 0) {
        if (f.number == 1) {
            if (scope != NULL) { /* a second one would be merged into the first by protobuf */
                rc = FALLBACK;
                goto done;
            }
            if ((rc = decode_scope(d, f.payload, &scope)) != DECODED)
                goto done;
        }
        else if (f.number == 3 && (rc = check_text(f.payload)) != DECODED) /* schema_url */
            goto done;
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if (scope == NULL && (scope = Py_BuildValue("(ss)", "", "")) == NULL)
        goto done;
    /* Then the spans (the fields were all read once: no error is left to meet). */
    pass = c;
    while (NEXT(&pass, SCOPE_SPANS, &f) > 0)
        if (f.number == 2 && (rc = decode_span(d, f.payload, resource, scope, spans)) != DECODED)
            goto done;
    rc = DECODED;
done:
    Py_XDECREF(scope);
    return rc;
}

/* A Resource's attributes, capped (the reference drops its dropped count). */
static int
decode_resource(const Decoder *d, Cursor c, PyObject **out)
{
    PyObject *attributes = PyDict_New();
    Py_ssize_t count = 0;
    Field f;
    int got, rc = FAILED;
    if (attributes == NULL)
        goto done;
    while ((got = NEXT(&c, RESOURCE, &f)) > 0) {
        if (f.number == 3) { /* entity_refs: messages upb checks, not decoded here */
            rc = FALLBACK;
            goto done;
        }
        if (f.number == 1 && (rc = add_attribute(d, f.payload, 0, attributes, &count)) != DECODED)
            goto done;
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    *out = Py_NewRef(attributes);
    rc = DECODED;
done:
    Py_XDECREF(attributes);
    return rc;
}

/* A ResourceSpans' spans, appended to `spans`. */
static int
decode_resource_spans(const Decoder *d, Cursor c, PyObject *spans)
{
    PyObject *resource = NULL;
    Cursor pass = c;
    Field f;
    int got, rc = FALLBACK;
    /* First the resource, whose attributes every span starts from: it may follow the scopes. */
    while ((got = NEXT(&pass, RESOURCE_SPANS, &f)) > 0) {
        if (f.number == 1) {
            if (resource != NULL) { /* a second one would be merged into the first by protobuf */
                rc = FALLBACK;
                goto done;
            }
            if ((rc = decode_resource(d, f.payload, &resource)) != DECODED)
                goto done;
        }
        else if (f.number == 3 && (rc = check_text(f.payload)) != DECODED) /* schema_url */
            goto done;
    }
    rc = FALLBACK;
    if (got < 0)
        goto done;
    rc = FAILED;
    if (resource == NULL && (resource = PyDict_New()) == NULL)
        goto done;
    /* Then the scopes (the fields were all read once: no error is left to meet). */
    pass = c;
    while (NEXT(&pass, RESOURCE_SPANS, &f) > 0)
        if (f.number == 2 && (rc = decode_scope_spans(d, f.payload, resource, spans)) != DECODED)
            goto done;
    rc = DECODED;
done:
    Py_XDECREF(resource);
    return rc;
}

/* An ExportTraceServiceRequest's spans, appended to `spans`. */
static int
decode_request(const Decoder *d, Cursor c, PyObject *spans)
{
    Field f;
    int got, rc;
    while ((got = NEXT(&c, REQUEST, &f)) > 0)
        if ((rc = decode_resource_spans(d, f.payload, spans)) != DECODED)
            return rc;
    return got < 0 ? FALLBACK : DECODED;
}

/* -- the module ----------------------------------------------------------------------------- */

static PyObject *
configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"span_type", "event_type", "truncated_marker", "deep_marker",
                               "max_depth", "max_key_length", "scope_length",
                               "event_name_length", NULL};
    State *state = PyModule_GetState(module);
    PyObject *span_type, *event_type, *truncated_marker, *deep_marker;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOUUnnnn:configure", keywords, &span_type,
                                     &event_type, &truncated_marker, &deep_marker,
                                     &state->max_depth, &state->max_key_length,
                                     &state->scope_length, &state->event_name_length))
        return NULL;
    Py_XSETREF(state->span_type, Py_NewRef(span_type));
    Py_XSETREF(state->event_type, Py_NewRef(event_type));
    Py_XSETREF(state->truncated_marker, Py_NewRef(truncated_marker));
    Py_XSETREF(state->deep_marker, Py_NewRef(deep_marker));
    Py_RETURN_NONE;
}

/* decode_spans and decode_rows: `map_options` NULL for OtlpSpan objects, else rows. */
static PyObject *
decode(State *state, Py_buffer *body, Py_ssize_t caps[3], const MapOptions *map_options)
{
    CachedKey keys[KEY_CACHE_SIZE] = {{{NULL, NULL}, NULL}};
    Py_ssize_t span_count = 0;
    Decoder d = {state, caps[0], caps[1], caps[2], keys, map_options, NULL, &span_count};
    Cursor c;
    PyObject *spans = NULL, *result = NULL;
    int rc;
    if (state->span_type == NULL || (map_options != NULL && !state->map.configured)) {
        PyErr_SetString(PyExc_RuntimeError, "_otlp_wire is not configured (otlp.py, mapping.py)");
        goto done;
    }
    /* Negative caps slice from the end in the reference: left to it. */
    if (d.max_value_length < 0 || d.max_attributes < 0 || d.max_events < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if ((spans = PyList_New(0)) == NULL || (map_options && (d.seen = PySet_New(NULL)) == NULL))
        goto done;
    c.at = body->buf;
    c.end = c.at + body->len;
    rc = decode_request(&d, c, spans);
    if (rc == FALLBACK)
        result = Py_NewRef(Py_None);
    else if (rc == DECODED)
        result = map_options ? Py_BuildValue("(On)", spans, span_count) : Py_NewRef(spans);
done:
    for (int i = 0; i < KEY_CACHE_SIZE; i++)
        Py_XDECREF(keys[i].text);
    Py_XDECREF(spans);
    Py_XDECREF(d.seen);
    return result;
}

static PyObject *
decode_spans(PyObject *module, PyObject *args)
{
    Py_buffer body;
    Py_ssize_t caps[3];
    if (!PyArg_ParseTuple(args, "y*nnn:decode_spans", &body, &caps[0], &caps[1], &caps[2]))
        return NULL;
    PyObject *result = decode(PyModule_GetState(module), &body, caps, NULL);
    PyBuffer_Release(&body);
    return result;
}

static PyObject *
decode_rows(PyObject *module, PyObject *args)
{
    Py_buffer body;
    Py_ssize_t caps[3];
    PyObject *options, *result = NULL;
    MapOptions o;
    if (!PyArg_ParseTuple(args, "y*nnnO!:decode_rows", &body, &caps[0], &caps[1], &caps[2],
                          &PyTuple_Type, &options))
        return NULL;
    if (parse_map_options(options, &o) == 0)
        result = decode(PyModule_GetState(module), &body, caps, &o);
    PyBuffer_Release(&body);
    return result;
}

static PyObject *
configure_mapping_method(PyObject *module, PyObject *args, PyObject *kwargs)
{
    State *state = PyModule_GetState(module);
    return configure_mapping(&state->map, args, kwargs);
}

static PyObject *
map_spans_method(PyObject *module, PyObject *args)
{
    State *state = PyModule_GetState(module);
    return map_spans(&state->map, args);
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "Sets the span and event types and the decoding constants (once, from otlp.py)."},
    {"decode_spans", decode_spans, METH_VARARGS,
     "decode_spans(body, max_value_length, max_attributes, max_events) -> list | None\n\n"
     "The spans the reference decoder yields for this ExportTraceServiceRequest, or None when "
     "the body is outside the subset decoded here (the reference decides then)."},
    {"decode_rows", decode_rows, METH_VARARGS,
     "decode_rows(body, max_value_length, max_attributes, max_events, options)\n"
     "-> (rows, span_count) | None\n\n"
     "The spans-table rows of decode_spans' spans, as mapping.to_rows makes them (a repeated "
     "span once), and how many spans the body held; or None, as decode_spans."},
    {"configure_mapping", (PyCFunction)(void (*)(void))configure_mapping_method,
     METH_VARARGS | METH_KEYWORDS,
     "Sets the mapping's vocabulary (once, from mapping.py)."},
    {"map_spans", map_spans_method, METH_VARARGS,
     "map_spans(spans, options, seen=set()) -> list: the rows of OtlpSpan objects, as "
     "mapping.to_rows."},
    {NULL, NULL, 0, NULL},
};

static int
traverse(PyObject *module, visitproc visit, void *arg)
{
    State *state = PyModule_GetState(module);
    Py_VISIT(state->span_type);
    Py_VISIT(state->event_type);
    Py_VISIT(state->truncated_marker);
    Py_VISIT(state->deep_marker);
    return traverse_mapping(&state->map, visit, arg);
}

static int
clear(PyObject *module)
{
    State *state = PyModule_GetState(module);
    Py_CLEAR(state->span_type);
    Py_CLEAR(state->event_type);
    Py_CLEAR(state->truncated_marker);
    Py_CLEAR(state->deep_marker);
    Py_CLEAR(state->trace_id_key);
    Py_CLEAR(state->span_id_key);
    Py_CLEAR(state->attributes_key);
    clear_mapping(&state->map);
    return 0;
}

static void
free_module(void *module)
{
    clear((PyObject *)module);
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "keel.traces._otlp_wire",
    .m_doc = "A fast path for decoding OTLP trace exports (see otlp.py).",
    .m_size = sizeof(State),
    .m_methods = methods,
    .m_traverse = traverse,
    .m_clear = clear,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__otlp_wire(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    State *state = PyModule_GetState(module); /* zeroed by PyModule_Create */
    if ((state->trace_id_key = PyUnicode_InternFromString("trace_id")) == NULL ||
        (state->span_id_key = PyUnicode_InternFromString("span_id")) == NULL ||
        (state->attributes_key = PyUnicode_InternFromString("attributes")) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
