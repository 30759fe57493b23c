/* The C fast path of keel.traces.mapping: OTLP spans to rows of the spans table.
 *
 * `map_view` makes exactly the row mapping.to_row makes (which stays the reference, and the
 * oracle of tests/traces/test_span_map.py): the same attribute table, converters, caps and
 * markers, the same dict of leftover attributes in the same order, the JSON columns encoded by
 * the same orjson.dumps. Pricing calls back into Python (mapping._price). Only the vocabulary
 * comes from mapping.py (configure_mapping); the rules are written out here, one function per
 * function of mapping.py, under the same names where it helps to compare them.
 *
 * Functions returning int return 0 or -1 with a Python exception set; those returning an
 * object return a new reference, or NULL with an exception set. A converter's "no value"
 * (None in mapping.py: the attribute stays) is *out == NULL with 0 returned.
 */
#include "_span_map.h"

#include <math.h>
#include <string.h>

enum {
    CONVERT_COLUMN, CONVERT_KIND, CONVERT_OPENINFERENCE_KIND, CONVERT_COUNT, CONVERT_NUMBER,
    CONVERT_FLAG, CONVERT_PAYLOAD, CONVERT_TAGS, CONVERTER_COUNT
};
static const char *const CONVERTER_NAMES[CONVERTER_COUNT] = {
    "column", "kind", "openinference_kind", "count", "number", "flag", "payload", "tags"};

static const char *const FIELD_NAMES[FIELD_COUNT] = {
    "service", "provider", "model", "response_model", "kind", "openinference_kind",
    "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "ttft_ms",
    "ttft_s", "customer", "session_id", "pipeline", "tags", "prompt_name", "prompt_version",
    "via_gateway", "input", "output"};

/* keel.storage.spans_repo.SPAN_COLUMNS, which configure_mapping checks. */
enum {
    C_TRACE_ID, C_SPAN_ID, C_PARENT_SPAN_ID, C_NAME, C_KIND, C_SERVICE, C_START_TIME,
    C_END_TIME, C_DURATION_MS, C_STATUS, C_ERROR, C_PROVIDER, C_MODEL, C_RESPONSE_MODEL,
    C_INPUT_TOKENS, C_OUTPUT_TOKENS, C_CACHED_TOKENS, C_REASONING_TOKENS, C_COST_USD,
    C_COST_ESTIMATED, C_TTFT_MS, C_CUSTOMER, C_SESSION_ID, C_PIPELINE, C_TAGS, C_PROMPT_NAME,
    C_PROMPT_VERSION, C_COUNTED, C_INPUT, C_OUTPUT, C_ATTRIBUTES, C_EVENTS, ROW_SIZE
};
static const char *const COLUMN_NAMES[ROW_SIZE] = {
    "trace_id", "span_id", "parent_span_id", "name", "kind", "service", "start_time",
    "end_time", "duration_ms", "status", "error", "provider", "model", "response_model",
    "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
    "cost_estimated", "ttft_ms", "customer", "session_id", "pipeline", "tags", "prompt_name",
    "prompt_version", "counted", "input", "output", "attributes", "events"};

static const char *const STRING_TEXT[STRING_COUNT] = {
    [S_UNSET] = "unset", [S_LLM] = "llm", [S_EMBEDDING] = "embedding", [S_SPAN] = "span",
    [S_EMPTY] = "", [S_EMPTY_LIST] = "[]" /* orjson.dumps([]) */, [S_NUL] = "" /* made apart: "\0" */, [S_REPLACEMENT] = "\xef\xbf\xbd",
    [S_COMMA] = ",", [S_DOT] = ".", [S_OPERATION] = "gen_ai.operation.name",
    [S_SCOPE_NAME] = "otel.scope.name", [S_SCOPE_VERSION] = "otel.scope.version",
    [S_OTEL_KIND] = "otel.span.kind", [S_OTEL_LINKS] = "otel.links",
    [S_KEEL_DROPPED_ATTRIBUTES] = "keel.dropped_attributes",
    [S_KEEL_DROPPED_EVENTS] = "keel.dropped_events",
    [S_KEEL_DROPPED_LINKS] = "keel.dropped_links", [S_INPUT_PREFIX] = "llm.input_messages.",
    [S_OUTPUT_PREFIX] = "llm.output_messages.", [S_MESSAGE_PREFIX] = "message.",
    [S_PROMPT_EVENT] = "gen_ai.content.prompt", [S_COMPLETION_EVENT] = "gen_ai.content.completion",
    [S_PROMPT] = "gen_ai.prompt", [S_COMPLETION] = "gen_ai.completion",
    [S_EXCEPTION] = "exception", [S_EXCEPTION_TYPE] = "exception.type",
    [S_EXCEPTION_MESSAGE] = "exception.message", [S_COLON] = ": ", [S_NAME] = "name",
    [S_TIME] = "time", [S_ATTRIBUTES] = "attributes", [S_STRIP] = "strip", [S_UPPER] = "upper",
    [S_TIME_NS] = "time_ns", [S_TRACE_ID] = "trace_id", [S_SPAN_ID] = "span_id",
    [S_PARENT_SPAN_ID] = "parent_span_id", [S_KIND] = "kind", [S_START_NS] = "start_ns",
    [S_END_NS] = "end_ns", [S_STATUS_CODE] = "status_code", [S_STATUS_MESSAGE] = "status_message",
    [S_SCOPE] = "scope", [S_EVENTS] = "events", [S_LINKS] = "links",
    [S_DROPPED_ATTRIBUTES] = "dropped_attributes", [S_DROPPED_EVENTS] = "dropped_events",
    [S_DROPPED_LINKS] = "dropped_links"};

#define INT32_LIMIT 2147483647LL

/* -- text ----------------------------------------------------------------------------------- */

static int
equal(PyObject *a, PyObject *b)
{
    return PyObject_RichCompareBool(a, b, Py_EQ);
}

/* Whether `text` starts with `prefix`: 1, 0, or -1. */
static int
starts_with(PyObject *text, PyObject *prefix)
{
    return (int)PyUnicode_Tailmatch(text, prefix, 0, PY_SSIZE_T_MAX, -1);
}

/* `text` (stolen) with every NUL replaced (PostgreSQL refuses NUL in text). */
static PyObject *
without_nul(const MapConfig *c, PyObject *text)
{
    Py_ssize_t at = PyUnicode_FindChar(text, 0, 0, PyUnicode_GET_LENGTH(text), 1);
    if (at == -1)
        return text;
    PyObject *clean = at == -2 ? NULL : PyUnicode_Replace(text, c->s[S_NUL], c->s[S_REPLACEMENT], -1);
    Py_DECREF(text);
    return clean;
}

/* `_text`: a string as it is (none when empty), a number as str() writes it. */
static int
as_text(PyObject *raw, PyObject **out)
{
    *out = NULL;
    if (PyUnicode_Check(raw)) {
        if (PyUnicode_GET_LENGTH(raw))
            *out = Py_NewRef(raw);
        return 0;
    }
    if ((PyLong_Check(raw) && !PyBool_Check(raw)) || PyFloat_Check(raw)) {
        *out = PyObject_Str(raw);
        return *out == NULL ? -1 : 0;
    }
    return 0;
}

/* `_column`: text storable in a column of `limit` characters. */
static int
column_text(const MapConfig *c, PyObject *raw, Py_ssize_t limit, PyObject **out)
{
    PyObject *text;
    *out = NULL;
    if (as_text(raw, &text) < 0)
        return -1;
    if (text == NULL)
        return 0;
    if ((text = without_nul(c, text)) == NULL)
        return -1;
    if (PyUnicode_GET_LENGTH(text) > limit) {
        Py_SETREF(text, PyUnicode_Substring(text, 0, limit));
        if (text == NULL)
            return -1;
    }
    *out = text;
    return 0;
}

/* `_long_text`: `text` (stolen, may be NULL) without NUL, cut to `limit` and marked. */
static int
long_text(const MapConfig *c, PyObject *text, Py_ssize_t limit, PyObject **out)
{
    *out = NULL;
    if (text == NULL)
        return 0;
    if ((text = without_nul(c, text)) == NULL)
        return -1;
    if (PyUnicode_GET_LENGTH(text) > limit) {
        PyObject *head = PyUnicode_Substring(text, 0, limit);
        Py_DECREF(text);
        if (head == NULL)
            return -1;
        text = PyUnicode_Concat(head, c->truncated_marker);
        Py_DECREF(head);
        if (text == NULL)
            return -1;
    }
    *out = text;
    return 0;
}

/* Appends `item` (stolen) to `list`. */
static int
append_stolen(PyObject *list, PyObject *item)
{
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* orjson.dumps(value).decode() */
static PyObject *
json_text(const MapConfig *c, PyObject *value)
{
    PyObject *bytes = PyObject_CallOneArg(c->dumps, value);
    if (bytes == NULL)
        return NULL;
    PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes), NULL);
    Py_DECREF(bytes);
    return text;
}

/* The value of 1 to `most` ASCII digits, or -1 for any other string. */
static long long
ascii_digits(PyObject *text, Py_ssize_t most)
{
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    if (!PyUnicode_IS_ASCII(text) || size == 0 || size > most)
        return -1;
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(text);
    long long value = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        value = value * 10 + (p[i] - '0');
    }
    return value;
}

/* -- the converters ------------------------------------------------------------------------- */

/* `_count`: a non-negative integer that fits the column. */
static int
as_count(PyObject *raw, PyObject **out)
{
    *out = NULL;
    if (PyFloat_Check(raw)) {
        double v = PyFloat_AS_DOUBLE(raw);
        if (isfinite(v) && floor(v) == v && v >= 0 && v <= (double)INT32_LIMIT)
            *out = PyLong_FromLong((long)v);
        else
            return 0;
    }
    else if (PyUnicode_Check(raw)) {
        long long v = ascii_digits(raw, 10);
        if (v < 0 || v > INT32_LIMIT)
            return 0;
        *out = PyLong_FromLongLong(v);
    }
    else if (PyLong_Check(raw) && !PyBool_Check(raw)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(raw, &overflow);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (overflow || v < 0 || v > INT32_LIMIT)
            return 0;
        *out = Py_NewRef(raw);
    }
    else
        return 0;
    return *out == NULL ? -1 : 0;
}

/* `_number`: a finite, non-negative float. */
static int
as_number(PyObject *raw, PyObject **out)
{
    double v;
    *out = NULL;
    if (PyUnicode_Check(raw)) {
        if (PyUnicode_GET_LENGTH(raw) > 64)
            return 0;
        PyObject *number = PyFloat_FromString(raw);
        if (number == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        v = PyFloat_AS_DOUBLE(number);
        Py_DECREF(number);
    }
    else if (PyLong_Check(raw) && !PyBool_Check(raw)) {
        v = PyLong_AsDouble(raw);
        if (v == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                return -1;
            PyErr_Clear();
            return 0;
        }
    }
    else if (PyFloat_Check(raw))
        v = PyFloat_AS_DOUBLE(raw);
    else
        return 0;
    if (!isfinite(v) || !(v >= 0))
        return 0;
    *out = PyFloat_FromDouble(v);
    return *out == NULL ? -1 : 0;
}

/* Whether ASCII `text` is `word` (lower-case) in any case. */
static int
ascii_word(PyObject *text, const char *word)
{
    Py_ssize_t size = (Py_ssize_t)strlen(word);
    if (!PyUnicode_IS_ASCII(text) || PyUnicode_GET_LENGTH(text) != size)
        return 0;
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < size; i++) {
        Py_UCS1 ch = p[i] >= 'A' && p[i] <= 'Z' ? p[i] + ('a' - 'A') : p[i];
        if (ch != (Py_UCS1)word[i])
            return 0;
    }
    return 1;
}

/* `_flag`: a bool, or "true" / "false" in any case (only ASCII letters lower to those). */
static int
as_flag(PyObject *raw, PyObject **out)
{
    *out = NULL;
    if (PyBool_Check(raw))
        *out = Py_NewRef(raw);
    else if (PyUnicode_Check(raw)) {
        if (ascii_word(raw, "true"))
            *out = Py_NewRef(Py_True);
        else if (ascii_word(raw, "false"))
            *out = Py_NewRef(Py_False);
    }
    return 0;
}

/* `_payload`: text as it is, a list or dict as JSON. */
static int
as_payload(const MapConfig *c, PyObject *raw, PyObject **out)
{
    *out = NULL;
    if (PyUnicode_Check(raw)) {
        if (PyUnicode_GET_LENGTH(raw))
            *out = Py_NewRef(raw);
        return 0;
    }
    if (PyList_Check(raw) || PyDict_Check(raw)) {
        *out = json_text(c, raw);
        return *out == NULL ? -1 : 0;
    }
    return 0;
}

/* `_tags`: a comma-separated string or a list, as a list of stripped, non-empty texts. */
static int
as_tags(const MapConfig *c, PyObject *raw, PyObject **out)
{
    PyObject *items, *tags = NULL, *text = NULL, *stripped = NULL, *tag;
    int rc = -1;
    *out = NULL;
    if (PyUnicode_Check(raw))
        items = PyUnicode_Split(raw, c->s[S_COMMA], -1);
    else if (PyList_Check(raw))
        items = Py_NewRef(raw);
    else
        return 0;
    if (items == NULL || (tags = PyList_New(0)) == NULL)
        goto done;
    Py_ssize_t count = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < count && i < c->max_tags; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (item == Py_None)
            continue;
        if ((text = PyObject_Str(item)) == NULL ||
            (stripped = PyObject_CallMethodNoArgs(text, c->s[S_STRIP])) == NULL ||
            column_text(c, stripped, c->tag_length, &tag) < 0)
            goto done;
        Py_CLEAR(text);
        Py_CLEAR(stripped);
        if (tag != NULL) {
            if (append_stolen(tags, tag) < 0)
                goto done;
        }
    }
    *out = Py_NewRef(tags);
    rc = 0;
done:
    Py_XDECREF(items);
    Py_XDECREF(tags);
    Py_XDECREF(text);
    Py_XDECREF(stripped);
    return rc;
}

static int
convert(const MapConfig *c, const TableEntry *entry, PyObject *raw, PyObject **out)
{
    PyObject *upper;
    *out = NULL;
    switch (entry->converter) {
    case CONVERT_COLUMN:
        return column_text(c, raw, entry->limit, out);
    case CONVERT_KIND: {
        if (!PyUnicode_Check(raw))
            return 0;
        int known = PySet_Contains(c->span_kinds, raw);
        if (known > 0)
            *out = Py_NewRef(raw);
        return known < 0 ? -1 : 0;
    }
    case CONVERT_OPENINFERENCE_KIND:
        if (!PyUnicode_Check(raw))
            return 0;
        /* str.upper(), not an ASCII one: "ı".upper() is "I" */
        if ((upper = PyObject_CallMethodNoArgs(raw, c->s[S_UPPER])) == NULL)
            return -1;
        *out = Py_XNewRef(PyDict_GetItemWithError(c->openinference_kinds, upper));
        Py_DECREF(upper);
        return *out == NULL && PyErr_Occurred() ? -1 : 0;
    case CONVERT_COUNT:
        return as_count(raw, out);
    case CONVERT_NUMBER:
        return as_number(raw, out);
    case CONVERT_FLAG:
        return as_flag(raw, out);
    case CONVERT_PAYLOAD:
        return as_payload(c, raw, out);
    default:
        return as_tags(c, raw, out);
    }
}

/* -- the mapping ---------------------------------------------------------------------------- */

typedef struct {
    int field;
    PyObject *key;
    PyObject *value;
} Candidate;

/* `_extract`: the mapped fields (new references in `fields`), removed from `attrs`. */
static int
extract(const MapConfig *c, PyObject *attrs, PyObject **fields)
{
    Candidate found[MAX_TABLE_ENTRIES];
    PyObject *chosen[FIELD_COUNT] = {NULL}; /* the key each field's value came from */
    int rank[FIELD_COUNT] = {0};
    int count = 0, rc = -1;
    Py_ssize_t pos = 0;
    PyObject *key, *raw, *value;
    while (PyDict_Next(attrs, &pos, &key, &raw)) {
        PyObject *index = PyDict_GetItemWithError(c->table, key);
        if (index == NULL) {
            if (PyErr_Occurred())
                goto done;
            continue;
        }
        const TableEntry *entry = &c->entries[PyLong_AsLong(index)];
        if (convert(c, entry, raw, &value) < 0)
            goto done;
        if (value == NULL)
            continue;
        /* each key at most once: count stays within the table's size */
        found[count++] = (Candidate){entry->field, Py_NewRef(key), value};
        if (chosen[entry->field] == NULL || entry->rank < rank[entry->field]) {
            chosen[entry->field] = key;
            rank[entry->field] = entry->rank;
            Py_XSETREF(fields[entry->field], Py_NewRef(value));
        }
    }
    for (int i = 0; i < count; i++) {
        int field = found[i].field;
        int drop = found[i].key == chosen[field];
        if (!drop && (drop = equal(found[i].value, fields[field])) < 0)
            goto done;
        if (drop && PyDict_DelItem(attrs, found[i].key) < 0)
            goto done;
    }
    rc = 0;
done:
    for (int i = 0; i < count; i++) {
        Py_DECREF(found[i].key);
        Py_DECREF(found[i].value);
    }
    return rc;
}

/* `_kind`: a borrowed reference. */
static PyObject *
span_kind(const MapConfig *c, PyObject **fields, PyObject *attrs, int has_model)
{
    PyObject *kind = fields[F_KIND] != NULL ? fields[F_KIND] : fields[F_OPENINFERENCE_KIND];
    if (kind != NULL)
        return kind;
    PyObject *operation = PyDict_GetItemWithError(attrs, c->s[S_OPERATION]);
    if (operation != NULL && PyUnicode_Check(operation))
        kind = PyDict_GetItemWithError(c->operations, operation);
    if (kind == NULL && PyErr_Occurred())
        return NULL;
    return kind != NULL ? kind : c->s[has_model ? S_LLM : S_SPAN];
}

/* `_messages`: OpenInference's `llm.input_messages.N.message.<field>` attributes among `keys`,
 * taken out of `attrs`, as a JSON list (NULL when there are none). */
static int
messages(const MapConfig *c, PyObject *attrs, PyObject *keys, PyObject *prefix, PyObject **out)
{
    PyObject *by_index = PyDict_New(), *indexes = NULL, *list = NULL;
    PyObject *rest = NULL, *head = NULL, *tail = NULL, *field = NULL, *number = NULL;
    PyObject *value = NULL;
    Py_ssize_t skip = PyUnicode_GET_LENGTH(prefix);
    int rc = -1;
    *out = NULL;
    if (by_index == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        int match = starts_with(key, prefix);
        if (match <= 0) {
            if (match < 0)
                goto done;
            continue;
        }
        Py_ssize_t size = PyUnicode_GET_LENGTH(key) - skip;
        if ((rest = PyUnicode_Substring(key, skip, skip + size)) == NULL)
            goto done;
        Py_ssize_t dot = PyUnicode_FindChar(rest, '.', 0, size, 1);
        if (dot == -2)
            goto done;
        head = dot < 0 ? Py_NewRef(rest) : PyUnicode_Substring(rest, 0, dot);
        tail = dot < 0 ? Py_NewRef(c->s[S_EMPTY]) : PyUnicode_Substring(rest, dot + 1, size);
        if (head == NULL || tail == NULL)
            goto done;
        long long index = ascii_digits(head, 6);
        if (index >= 0) {
            int message = starts_with(tail, c->s[S_MESSAGE_PREFIX]);
            if (message < 0)
                goto done;
            Py_ssize_t from = message ? PyUnicode_GET_LENGTH(c->s[S_MESSAGE_PREFIX]) : 0;
            if ((field = PyUnicode_Substring(tail, from, PyUnicode_GET_LENGTH(tail))) == NULL ||
                (number = PyLong_FromLongLong(index)) == NULL)
                goto done;
            PyObject *entry = PyDict_GetItemWithError(by_index, number); /* borrowed */
            if (entry == NULL) {
                if (PyErr_Occurred() || (entry = PyDict_New()) == NULL)
                    goto done;
                int failed = PyDict_SetItem(by_index, number, entry) < 0;
                Py_DECREF(entry); /* by_index holds it */
                if (failed)
                    goto done;
            }
            if ((value = Py_XNewRef(PyDict_GetItemWithError(attrs, key))) == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, key);
                goto done;
            }
            if (PyDict_DelItem(attrs, key) < 0 || PyDict_SetItem(entry, field, value) < 0)
                goto done;
            Py_CLEAR(field);
            Py_CLEAR(number);
            Py_CLEAR(value);
        }
        Py_CLEAR(rest);
        Py_CLEAR(head);
        Py_CLEAR(tail);
    }
    if (PyDict_GET_SIZE(by_index) == 0) {
        rc = 0;
        goto done;
    }
    if ((indexes = PyDict_Keys(by_index)) == NULL || PyList_Sort(indexes) < 0 ||
        (list = PyList_New(PyList_GET_SIZE(indexes))) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(indexes); i++)
        PyList_SET_ITEM(list, i, Py_NewRef(PyDict_GetItem(by_index, PyList_GET_ITEM(indexes, i))));
    if ((*out = json_text(c, list)) == NULL)
        goto done;
    rc = 0;
done:
    Py_XDECREF(by_index);
    Py_XDECREF(indexes);
    Py_XDECREF(list);
    Py_XDECREF(rest);
    Py_XDECREF(head);
    Py_XDECREF(tail);
    Py_XDECREF(field);
    Py_XDECREF(number);
    Py_XDECREF(value);
    return rc;
}

/* An event's name and attributes (new references). */
static int
event_parts(const MapConfig *c, PyObject *event, PyObject **name, PyObject **attributes)
{
    *attributes = NULL;
    if ((*name = PyObject_GetAttr(event, c->s[S_NAME])) == NULL)
        return -1;
    if ((*attributes = PyObject_GetAttr(event, c->s[S_ATTRIBUTES])) == NULL) {
        Py_CLEAR(*name);
        return -1;
    }
    return 0;
}

/* attributes.get(key) of an event's attributes: a borrowed reference, NULL for none. */
static PyObject *
get(PyObject *attributes, PyObject *key)
{
    return PyDict_Check(attributes) ? PyDict_GetItemWithError(attributes, key)
                                    : (PyErr_SetString(PyExc_TypeError, "attributes: not a dict"), NULL);
}

/* `_event_payloads`: the prompt and completion of GenAI content events. */
static int
event_payloads(const MapConfig *c, PyObject *events, PyObject **prompt, PyObject **completion)
{
    PyObject *name = NULL, *attributes = NULL;
    int rc = -1;
    *prompt = *completion = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        if (event_parts(c, PyList_GET_ITEM(events, i), &name, &attributes) < 0)
            goto done;
        int is_prompt = equal(name, c->s[S_PROMPT_EVENT]);
        if (is_prompt < 0)
            goto done;
        PyObject **slot = NULL, *key = NULL;
        if (is_prompt && *prompt == NULL) {
            slot = prompt;
            key = c->s[S_PROMPT];
        }
        else {
            int is_completion = equal(name, c->s[S_COMPLETION_EVENT]);
            if (is_completion < 0)
                goto done;
            if (is_completion && *completion == NULL) {
                slot = completion;
                key = c->s[S_COMPLETION];
            }
        }
        if (slot != NULL) {
            PyObject *raw = get(attributes, key);
            if (raw == NULL && PyErr_Occurred())
                goto done;
            if (raw != NULL && as_payload(c, raw, slot) < 0)
                goto done;
        }
        Py_CLEAR(name);
        Py_CLEAR(attributes);
    }
    rc = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    if (rc < 0) {
        Py_CLEAR(*prompt);
        Py_CLEAR(*completion);
    }
    return rc;
}

/* `_payloads`: the input and output columns (NULL for none). */
static int
payloads(const MapConfig *c, const MapOptions *o, PyObject **fields, SpanView *span,
         PyObject **input, PyObject **output)
{
    PyObject *attrs = span->attributes, *flat = PyList_New(0), *key, *value;
    PyObject *inp = NULL, *out = NULL, *event_in = NULL, *event_out = NULL;
    PyObject *name = NULL, *attributes = NULL;
    Py_ssize_t pos = 0;
    int rc = -1;
    *input = *output = NULL;
    if (flat == NULL)
        goto done;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        /* the first-letter test first: it is most of this scan's cost saved, for every span */
        if (!PyUnicode_Check(key) || PyUnicode_GET_LENGTH(key) == 0 ||
            PyUnicode_READ_CHAR(key, 0) != 'l')
            continue;
        int match = starts_with(key, c->s[S_INPUT_PREFIX]);
        if (match == 0)
            match = starts_with(key, c->s[S_OUTPUT_PREFIX]);
        if (match < 0 || (match && PyList_Append(flat, key) < 0))
            goto done;
    }
    if (!o->store_payloads) { /* no payload is kept anywhere, attributes and events included */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(flat); i++)
            if (PyDict_DelItem(attrs, PyList_GET_ITEM(flat, i)) < 0)
                goto done;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(span->events); i++) {
            PyObject *event = PyList_GET_ITEM(span->events, i);
            if ((name = PyObject_GetAttr(event, c->s[S_NAME])) == NULL)
                goto done;
            int content = equal(name, c->s[S_PROMPT_EVENT]);
            if (content == 0)
                content = equal(name, c->s[S_COMPLETION_EVENT]);
            if (content < 0)
                goto done;
            if (content) {
                if ((attributes = PyDict_New()) == NULL ||
                    PyObject_SetAttr(event, c->s[S_ATTRIBUTES], attributes) < 0)
                    goto done;
                Py_CLEAR(attributes);
            }
            Py_CLEAR(name);
        }
        rc = 0;
        goto done;
    }
    inp = Py_XNewRef(fields[F_INPUT]);
    out = Py_XNewRef(fields[F_OUTPUT]);
    if (PyList_GET_SIZE(flat)) {
        if (inp == NULL && messages(c, attrs, flat, c->s[S_INPUT_PREFIX], &inp) < 0)
            goto done;
        if (out == NULL && messages(c, attrs, flat, c->s[S_OUTPUT_PREFIX], &out) < 0)
            goto done;
    }
    if ((inp == NULL || out == NULL) && PyList_GET_SIZE(span->events)) {
        if (event_payloads(c, span->events, &event_in, &event_out) < 0)
            goto done;
        if (inp == NULL)
            inp = Py_XNewRef(event_in);
        if (out == NULL)
            out = Py_XNewRef(event_out);
    }
    if (long_text(c, inp, o->payload_max, input) < 0) {
        inp = NULL;
        goto done;
    }
    inp = NULL; /* long_text took it */
    if (long_text(c, out, o->payload_max, output) < 0) {
        out = NULL;
        Py_CLEAR(*input);
        goto done;
    }
    out = NULL;
    rc = 0;
done:
    Py_XDECREF(flat);
    Py_XDECREF(inp);
    Py_XDECREF(out);
    Py_XDECREF(event_in);
    Py_XDECREF(event_out);
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    return rc;
}

/* `_error`: the status message, else the first exception event's type and message. */
static int
span_error(const MapConfig *c, SpanView *span, PyObject **out)
{
    PyObject *name = NULL, *attributes = NULL, *parts = NULL, *text;
    int rc = -1;
    *out = NULL;
    int has_message = PyObject_IsTrue(span->status_message);
    if (has_message) {
        if (has_message > 0)
            *out = Py_NewRef(span->status_message);
        return has_message < 0 ? -1 : 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(span->events); i++) {
        if (event_parts(c, PyList_GET_ITEM(span->events, i), &name, &attributes) < 0)
            goto done;
        int exception = equal(name, c->s[S_EXCEPTION]);
        if (exception < 0)
            goto done;
        if (exception) {
            if ((parts = PyList_New(0)) == NULL)
                goto done;
            PyObject *keys[2] = {c->s[S_EXCEPTION_TYPE], c->s[S_EXCEPTION_MESSAGE]};
            for (int k = 0; k < 2; k++) {
                PyObject *part = get(attributes, keys[k]);
                if (part == NULL && PyErr_Occurred())
                    goto done;
                /* `p not in (None, "")` */
                if (part == NULL || part == Py_None ||
                    (PyUnicode_Check(part) && PyUnicode_GET_LENGTH(part) == 0))
                    continue;
                if ((text = PyObject_Str(part)) == NULL)
                    goto done;
                if (append_stolen(parts, text) < 0)
                    goto done;
            }
            if (PyList_GET_SIZE(parts)) {
                *out = PyUnicode_Join(c->s[S_COLON], parts);
                rc = *out == NULL ? -1 : 0;
                goto done;
            }
            Py_CLEAR(parts);
        }
        Py_CLEAR(name);
        Py_CLEAR(attributes);
    }
    rc = 0;
done:
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    Py_XDECREF(parts);
    return rc;
}

/* `_events`: the events column. */
static PyObject *
events_value(const MapConfig *c, PyObject *events)
{
    PyObject *list = PyList_New(PyList_GET_SIZE(events)), *name = NULL, *attributes = NULL;
    PyObject *time_ns = NULL, *time = NULL, *item;
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (event_parts(c, event, &name, &attributes) < 0 ||
            (time_ns = PyObject_GetAttr(event, c->s[S_TIME_NS])) == NULL)
            goto failed;
        double ns = PyFloat_AsDouble(time_ns);
        if ((ns == -1.0 && PyErr_Occurred()) || (time = PyFloat_FromDouble(ns / 1e9)) == NULL ||
            (item = PyDict_New()) == NULL)
            goto failed;
        PyList_SET_ITEM(list, i, item);
        if (PyDict_SetItem(item, c->s[S_NAME], name) < 0 ||
            PyDict_SetItem(item, c->s[S_TIME], time) < 0 ||
            PyDict_SetItem(item, c->s[S_ATTRIBUTES], attributes) < 0)
            goto failed;
        Py_CLEAR(name);
        Py_CLEAR(attributes);
        Py_CLEAR(time_ns);
        Py_CLEAR(time);
    }
    return list;
failed:
    Py_DECREF(list);
    Py_XDECREF(name);
    Py_XDECREF(attributes);
    Py_XDECREF(time_ns);
    Py_XDECREF(time);
    return NULL;
}

/* `_annotate`: what OTLP says beyond the attributes, under otel.* / keel.* names. */
static int
annotate(const MapConfig *c, SpanView *span)
{
    PyObject *attrs = span->attributes;
    if (!PyTuple_Check(span->scope) || PyTuple_GET_SIZE(span->scope) != 2) {
        PyErr_SetString(PyExc_TypeError, "scope: not a (name, version) tuple");
        return -1;
    }
    PyObject *name = PyTuple_GET_ITEM(span->scope, 0), *version = PyTuple_GET_ITEM(span->scope, 1);
    int set = PyObject_IsTrue(name);
    if (set < 0 || (set && PyDict_SetItem(attrs, c->s[S_SCOPE_NAME], name) < 0))
        return -1;
    if (set) {
        if ((set = PyObject_IsTrue(version)) < 0 ||
            (set && PyDict_SetItem(attrs, c->s[S_SCOPE_VERSION], version) < 0))
            return -1;
    }
    PyObject *kind = PyDict_GetItemWithError(c->otel_kinds, span->kind);
    if (kind == NULL && PyErr_Occurred())
        return -1;
    if (kind != NULL && PyDict_SetItem(attrs, c->s[S_OTEL_KIND], kind) < 0)
        return -1;
    if (PyList_GET_SIZE(span->links) && PyDict_SetItem(attrs, c->s[S_OTEL_LINKS], span->links) < 0)
        return -1;
    PyObject *counts[3] = {span->dropped_attributes, span->dropped_events, span->dropped_links};
    int names[3] = {S_KEEL_DROPPED_ATTRIBUTES, S_KEEL_DROPPED_EVENTS, S_KEEL_DROPPED_LINKS};
    for (int i = 0; i < 3; i++) {
        if ((set = PyObject_IsTrue(counts[i])) < 0 ||
            (set && PyDict_SetItem(attrs, c->s[names[i]], counts[i]) < 0))
            return -1;
    }
    return 0;
}

/* `_cost`: the price of a counted call (the row's cost_usd and cost_estimated). */
static int
span_cost(const MapConfig *c, const MapOptions *o, PyObject *kind, PyObject *model,
          PyObject *provider, PyObject **fields, double start_time, PyObject **usd,
          PyObject **estimated)
{
    *usd = Py_NewRef(Py_None);
    *estimated = Py_NewRef(Py_False);
    if (model == NULL || (fields[F_INPUT_TOKENS] == NULL && fields[F_OUTPUT_TOKENS] == NULL))
        return 0;
    int counted = equal(kind, c->s[S_LLM]);
    if (counted == 0)
        counted = equal(kind, c->s[S_EMBEDDING]);
    if (counted <= 0)
        return counted;
    PyObject *start = PyFloat_FromDouble(start_time);
    if (start == NULL)
        return -1;
    PyObject *args[8] = {o->pricer, model, provider ? provider : Py_None};
    for (int i = 0; i < 4; i++) {
        PyObject *tokens = fields[F_INPUT_TOKENS + i];
        args[3 + i] = tokens ? tokens : Py_None;
    }
    args[7] = start;
    PyObject *cost = PyObject_Vectorcall(c->price, args, 8, NULL);
    Py_DECREF(start);
    if (cost == NULL)
        return -1;
    if (!PyTuple_Check(cost) || PyTuple_GET_SIZE(cost) != 2) {
        Py_DECREF(cost);
        PyErr_SetString(PyExc_TypeError, "mapping._price must return (usd, estimated)");
        return -1;
    }
    Py_SETREF(*usd, Py_NewRef(PyTuple_GET_ITEM(cost, 0)));
    Py_SETREF(*estimated, Py_NewRef(PyTuple_GET_ITEM(cost, 1)));
    Py_DECREF(cost);
    return 0;
}

/* `_values` and `to_row`. */
PyObject *
map_view(const MapConfig *c, const MapOptions *o, SpanView *span)
{
    PyObject *fields[FIELD_COUNT] = {NULL}, *row[ROW_SIZE] = {NULL};
    PyObject *input = NULL, *output = NULL, *name = NULL, *error = NULL, *result = NULL;
    PyObject *attrs = span->attributes;
    if (extract(c, attrs, fields) < 0 || payloads(c, o, fields, span, &input, &output) < 0)
        goto done;
    row[C_INPUT] = input ? input : Py_NewRef(Py_None);
    row[C_OUTPUT] = output ? output : Py_NewRef(Py_None);
    if (fields[F_TTFT_MS] != NULL)
        row[C_TTFT_MS] = Py_NewRef(fields[F_TTFT_MS]);
    else if (fields[F_TTFT_S] != NULL)
        row[C_TTFT_MS] = PyFloat_FromDouble(PyFloat_AS_DOUBLE(fields[F_TTFT_S]) * 1000.0);
    else
        row[C_TTFT_MS] = Py_NewRef(Py_None);
    if (row[C_TTFT_MS] == NULL)
        goto done;
    name = Py_NewRef(span->name);
    if (PyUnicode_GET_LENGTH(name) > c->name_length ||
        PyUnicode_FindChar(name, 0, 0, PyUnicode_GET_LENGTH(name), 1) != -1) {
        PyObject *cut;
        if (column_text(c, span->name, c->name_length, &cut) < 0)
            goto done;
        Py_SETREF(name, cut ? cut : Py_NewRef(c->s[S_EMPTY]));
    }
    row[C_NAME] = name;
    name = NULL;
    PyObject *model = fields[F_MODEL], *response_model = fields[F_RESPONSE_MODEL];
    PyObject *kind = span_kind(c, fields, attrs, model != NULL || response_model != NULL);
    if (kind == NULL)
        goto done;
    row[C_KIND] = Py_NewRef(kind);
    if (model == NULL)
        model = response_model;
    if (fields[F_COST_USD] != NULL) {
        row[C_COST_USD] = Py_NewRef(fields[F_COST_USD]);
        row[C_COST_ESTIMATED] = Py_NewRef(Py_False);
    }
    else if (span_cost(c, o, kind, response_model ? response_model : model, fields[F_PROVIDER],
                       fields, span->start_s, &row[C_COST_USD], &row[C_COST_ESTIMATED]) < 0)
        goto done;
    if (annotate(c, span) < 0)
        goto done;
    row[C_TRACE_ID] = Py_NewRef(span->trace_id);
    row[C_SPAN_ID] = Py_NewRef(span->span_id);
    row[C_PARENT_SPAN_ID] = Py_NewRef(span->parent_span_id);
    row[C_SERVICE] = Py_NewRef(fields[F_SERVICE] ? fields[F_SERVICE] : Py_None);
    double duration = (span->end_s - span->start_s) * 1000.0;
    if ((row[C_START_TIME] = PyFloat_FromDouble(span->start_s)) == NULL ||
        (row[C_END_TIME] = PyFloat_FromDouble(span->end_s)) == NULL ||
        (row[C_DURATION_MS] = PyFloat_FromDouble(duration > 0.0 ? duration : 0.0)) == NULL)
        goto done;
    PyObject *status = PyDict_GetItemWithError(c->statuses, span->status_code);
    if (status == NULL && PyErr_Occurred())
        goto done;
    row[C_STATUS] = Py_NewRef(status ? status : c->s[S_UNSET]);
    if (span_error(c, span, &error) < 0 || long_text(c, error, o->text_max, &row[C_ERROR]) < 0)
        goto done;
    if (row[C_ERROR] == NULL)
        row[C_ERROR] = Py_NewRef(Py_None);
    row[C_PROVIDER] = Py_NewRef(fields[F_PROVIDER] ? fields[F_PROVIDER] : Py_None);
    row[C_MODEL] = Py_NewRef(model ? model : Py_None);
    row[C_RESPONSE_MODEL] = Py_NewRef(response_model ? response_model : Py_None);
    static const int simple[][2] = {
        {C_INPUT_TOKENS, F_INPUT_TOKENS}, {C_OUTPUT_TOKENS, F_OUTPUT_TOKENS},
        {C_CACHED_TOKENS, F_CACHED_TOKENS}, {C_REASONING_TOKENS, F_REASONING_TOKENS},
        {C_SESSION_ID, F_SESSION_ID}, {C_PIPELINE, F_PIPELINE}, {C_PROMPT_NAME, F_PROMPT_NAME},
        {C_PROMPT_VERSION, F_PROMPT_VERSION}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        PyObject *value = fields[simple[i][1]];
        row[simple[i][0]] = Py_NewRef(value ? value : Py_None);
    }
    row[C_CUSTOMER] = Py_NewRef(fields[F_CUSTOMER] ? fields[F_CUSTOMER] : o->customer);
    int via_gateway = fields[F_VIA_GATEWAY] ? PyObject_IsTrue(fields[F_VIA_GATEWAY]) : 0;
    if (via_gateway < 0)
        goto done;
    row[C_COUNTED] = Py_NewRef(via_gateway ? Py_False : Py_True);
    /* The JSON columns as to_row encodes them (most spans have no tags and no events). */
    PyObject *tags = fields[F_TAGS]; /* a list (as_tags) */
    row[C_TAGS] = tags != NULL && PyList_GET_SIZE(tags) ? json_text(c, tags)
                                                         : Py_NewRef(c->s[S_EMPTY_LIST]);
    if (row[C_TAGS] == NULL || (row[C_ATTRIBUTES] = json_text(c, attrs)) == NULL)
        goto done;
    if (PyList_GET_SIZE(span->events) == 0)
        row[C_EVENTS] = Py_NewRef(c->s[S_EMPTY_LIST]);
    else {
        PyObject *events = events_value(c, span->events);
        if (events == NULL)
            goto done;
        row[C_EVENTS] = json_text(c, events);
        Py_DECREF(events);
        if (row[C_EVENTS] == NULL)
            goto done;
    }
    if ((result = PyTuple_New(ROW_SIZE)) == NULL)
        goto done;
    for (int i = 0; i < ROW_SIZE; i++) {
        PyTuple_SET_ITEM(result, i, row[i]);
        row[i] = NULL;
    }
done:
    for (int i = 0; i < FIELD_COUNT; i++)
        Py_XDECREF(fields[i]);
    for (int i = 0; i < ROW_SIZE; i++)
        Py_XDECREF(row[i]);
    Py_XDECREF(name);
    return result;
}

/* -- entry points --------------------------------------------------------------------------- */

int
parse_map_options(PyObject *tuple, MapOptions *out)
{
    if (!PyArg_ParseTuple(tuple, "pnnOO:options", &out->store_payloads, &out->payload_max,
                          &out->text_max, &out->customer, &out->pricer))
        return -1;
    if (out->payload_max < 0 || out->text_max < 0) {
        PyErr_SetString(PyExc_ValueError, "payload_max and text_max must not be negative");
        return -1;
    }
    return 0;
}

int
first_copy(PyObject *seen, PyObject *trace_id, PyObject *span_id)
{
    PyObject *key = PyTuple_Pack(2, trace_id, span_id);
    if (key == NULL)
        return -1;
    int known = PySet_Contains(seen, key);
    if (known == 0 && PySet_Add(seen, key) < 0)
        known = -1;
    Py_DECREF(key);
    return known < 0 ? -1 : !known;
}

/* An OtlpSpan's fields as a view (borrowed references, held by the span). */
static int
view_of(const MapConfig *c, PyObject *span, SpanView *v, PyObject **held)
{
    static const int names[] = {
        S_TRACE_ID, S_SPAN_ID, S_PARENT_SPAN_ID, S_NAME, S_KIND, S_START_NS, S_END_NS,
        S_STATUS_CODE, S_STATUS_MESSAGE, S_ATTRIBUTES, S_SCOPE, S_EVENTS, S_LINKS,
        S_DROPPED_ATTRIBUTES, S_DROPPED_EVENTS, S_DROPPED_LINKS};
    enum { HELD = sizeof names / sizeof names[0] };
    for (int i = 0; i < HELD; i++)
        if ((held[i] = PyObject_GetAttr(span, c->s[names[i]])) == NULL)
            return -1;
    *v = (SpanView){held[0], held[1], held[2], held[3], held[4], 0, 0, held[7], held[8],
                    held[9], held[10], held[11], held[12], held[13], held[14], held[15]};
    if (!PyUnicode_Check(v->name) || !PyUnicode_Check(v->status_message) ||
        !PyDict_Check(v->attributes) || !PyList_Check(v->events) || !PyList_Check(v->links)) {
        PyErr_SetString(PyExc_TypeError, "not an OtlpSpan");
        return -1;
    }
    v->start_s = PyFloat_AsDouble(held[5]) / 1e9;
    if (PyErr_Occurred())
        return -1;
    v->end_s = PyFloat_AsDouble(held[6]) / 1e9;
    return PyErr_Occurred() ? -1 : 0;
}

PyObject *
map_spans(const MapConfig *c, PyObject *args)
{
    PyObject *spans, *options, *iterator = NULL, *rows = NULL, *seen = NULL, *span = NULL;
    PyObject *held[16] = {NULL}, *result = NULL;
    MapOptions o;
    SpanView v;
    /* `seen`: the keys of the spans mapped before (a set, added to), for an export mapped in
     * several calls */
    if (!PyArg_ParseTuple(args, "OO!|O!:map_spans", &spans, &PyTuple_Type, &options, &PySet_Type,
                          &seen))
        return NULL;
    if (!c->configured) {
        PyErr_SetString(PyExc_RuntimeError, "_otlp_wire.configure_mapping() was not called");
        return NULL;
    }
    if (parse_map_options(options, &o) < 0 || (iterator = PyObject_GetIter(spans)) == NULL ||
        (rows = PyList_New(0)) == NULL ||
        (seen = seen ? Py_NewRef(seen) : PySet_New(NULL)) == NULL)
        goto done;
    while ((span = PyIter_Next(iterator)) != NULL) {
        if (view_of(c, span, &v, held) < 0)
            goto done;
        int first = first_copy(seen, v.trace_id, v.span_id);
        if (first < 0)
            goto done;
        if (first) {
            PyObject *row = map_view(c, &o, &v);
            if (row == NULL)
                goto done;
            if (append_stolen(rows, row) < 0)
                goto done;
        }
        for (int i = 0; i < 16; i++)
            Py_CLEAR(held[i]);
        Py_CLEAR(span);
    }
    if (!PyErr_Occurred())
        result = Py_NewRef(rows);
done:
    for (int i = 0; i < 16; i++)
        Py_XDECREF(held[i]);
    Py_XDECREF(span);
    Py_XDECREF(iterator);
    Py_XDECREF(rows);
    Py_XDECREF(seen);
    return result;
}

/* -- configuration -------------------------------------------------------------------------- */

static int
index_of(const char *const *names, int count, PyObject *name, const char *what)
{
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL)
        return -1;
    for (int i = 0; i < count; i++)
        if (strcmp(names[i], text) == 0)
            return i;
    PyErr_Format(PyExc_ValueError, "_span_map.c knows no %s %R", what, name);
    return -1;
}

/* The table: (attribute, field, rank, converter, limit) tuples. */
static int
set_table(MapConfig *c, PyObject *table)
{
    PyObject *lookup = PyDict_New(), *index;
    if (lookup == NULL)
        return -1;
    Py_ssize_t count = PyList_GET_SIZE(table);
    if (count > MAX_TABLE_ENTRIES) {
        PyErr_SetString(PyExc_ValueError, "the attribute table is larger than _span_map.c's");
        goto failed;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *key, *field, *converter;
        TableEntry *entry = &c->entries[i];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(table, i), "UUiUn:table entry", &key, &field,
                              &entry->rank, &converter, &entry->limit) ||
            (entry->field = index_of(FIELD_NAMES, FIELD_COUNT, field, "field")) < 0 ||
            (entry->converter =
                 index_of(CONVERTER_NAMES, CONVERTER_COUNT, converter, "converter")) < 0 ||
            (index = PyLong_FromSsize_t(i)) == NULL)
            goto failed;
        int failed = PyDict_SetItem(lookup, key, index) < 0;
        Py_DECREF(index);
        if (failed)
            goto failed;
    }
    Py_XSETREF(c->table, lookup);
    return 0;
failed:
    Py_DECREF(lookup);
    return -1;
}

PyObject *
configure_mapping(MapConfig *c, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "columns", "fields", "table", "span_kinds", "openinference_kinds", "operations",
        "otel_kinds", "statuses", "dumps", "price", "truncated_marker", "name_length",
        "tag_length", "max_tags", NULL};
    PyObject *columns, *fields, *table, *span_kinds, *oi_kinds, *operations, *otel_kinds;
    PyObject *statuses, *dumps, *price, *marker;
    Py_ssize_t name_length, tag_length, max_tags;
    c->configured = 0;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "O!O!O!O!O!O!O!O!OOUnnn:configure_mapping", keywords, &PyTuple_Type,
            &columns, &PyTuple_Type, &fields, &PyList_Type, &table, &PyFrozenSet_Type,
            &span_kinds, &PyDict_Type, &oi_kinds, &PyDict_Type, &operations, &PyDict_Type,
            &otel_kinds, &PyDict_Type, &statuses, &dumps, &price, &marker, &name_length,
            &tag_length, &max_tags))
        return NULL;
    /* the row's columns and the fields must be the ones this file was written for */
    if (PyTuple_GET_SIZE(columns) != ROW_SIZE || PyTuple_GET_SIZE(fields) != FIELD_COUNT) {
        PyErr_SetString(PyExc_ValueError, "the span columns or fields changed: teach _span_map.c");
        return NULL;
    }
    for (int i = 0; i < ROW_SIZE; i++)
        if (index_of(COLUMN_NAMES + i, 1, PyTuple_GET_ITEM(columns, i), "column") < 0)
            return NULL;
    for (int i = 0; i < FIELD_COUNT; i++)
        if (index_of(FIELD_NAMES + i, 1, PyTuple_GET_ITEM(fields, i), "field") < 0)
            return NULL;
    if (set_table(c, table) < 0)
        return NULL;
    for (int i = 0; i < STRING_COUNT; i++) {
        PyObject *text = i == S_NUL ? PyUnicode_FromStringAndSize("\0", 1)
                                    : PyUnicode_FromString(STRING_TEXT[i]);
        if (text == NULL)
            return NULL;
        PyUnicode_InternInPlace(&text);
        Py_XSETREF(c->s[i], text);
    }
    Py_XSETREF(c->span_kinds, Py_NewRef(span_kinds));
    Py_XSETREF(c->openinference_kinds, Py_NewRef(oi_kinds));
    Py_XSETREF(c->operations, Py_NewRef(operations));
    Py_XSETREF(c->otel_kinds, Py_NewRef(otel_kinds));
    Py_XSETREF(c->statuses, Py_NewRef(statuses));
    Py_XSETREF(c->dumps, Py_NewRef(dumps));
    Py_XSETREF(c->price, Py_NewRef(price));
    Py_XSETREF(c->truncated_marker, Py_NewRef(marker));
    c->name_length = name_length;
    c->tag_length = tag_length;
    c->max_tags = max_tags;
    c->configured = 1;
    Py_RETURN_NONE;
}

int
traverse_mapping(MapConfig *c, visitproc visit, void *arg)
{
    Py_VISIT(c->table);
    Py_VISIT(c->span_kinds);
    Py_VISIT(c->openinference_kinds);
    Py_VISIT(c->operations);
    Py_VISIT(c->otel_kinds);
    Py_VISIT(c->statuses);
    Py_VISIT(c->dumps);
    Py_VISIT(c->price);
    Py_VISIT(c->truncated_marker);
    return 0;
}

void
clear_mapping(MapConfig *c)
{
    c->configured = 0;
    Py_CLEAR(c->table);
    Py_CLEAR(c->span_kinds);
    Py_CLEAR(c->openinference_kinds);
    Py_CLEAR(c->operations);
    Py_CLEAR(c->otel_kinds);
    Py_CLEAR(c->statuses);
    Py_CLEAR(c->dumps);
    Py_CLEAR(c->price);
    Py_CLEAR(c->truncated_marker);
    for (int i = 0; i < STRING_COUNT; i++)
        Py_CLEAR(c->s[i]);
}
