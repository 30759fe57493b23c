/* The C fast path of keel.traces.mapping: a decoded span to its row of the spans table.
 *
 * Shared by _otlp_wire.c (which maps the spans it decodes without building OtlpSpan objects)
 * and _span_map.c (the mapping itself, and `map_spans` over OtlpSpan objects).
 */
#ifndef KEEL_SPAN_MAP_H
#define KEEL_SPAN_MAP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The mapped fields, in the order of mapping.py's `_FIELDS` (checked by configure_mapping). */
enum {
    F_SERVICE, F_PROVIDER, F_MODEL, F_RESPONSE_MODEL, F_KIND, F_OPENINFERENCE_KIND,
    F_INPUT_TOKENS, F_OUTPUT_TOKENS, F_CACHED_TOKENS, F_REASONING_TOKENS, F_COST_USD,
    F_TTFT_MS, F_TTFT_S, F_CUSTOMER, F_SESSION_ID, F_PIPELINE, F_TAGS, F_PROMPT_NAME,
    F_PROMPT_VERSION, F_VIA_GATEWAY, F_INPUT, F_OUTPUT, FIELD_COUNT
};

#define MAX_TABLE_ENTRIES 128

/* The constant strings the mapping uses: attribute names and values, attribute names of
 * OtlpSpan and OtlpEvent, methods called. */
enum {
    S_UNSET, S_LLM, S_EMBEDDING, S_SPAN, S_EMPTY, S_EMPTY_LIST, S_NUL, S_REPLACEMENT, S_COMMA, S_DOT,
    S_OPERATION, S_SCOPE_NAME, S_SCOPE_VERSION, S_OTEL_KIND, S_OTEL_LINKS,
    S_KEEL_DROPPED_ATTRIBUTES, S_KEEL_DROPPED_EVENTS, S_KEEL_DROPPED_LINKS, S_INPUT_PREFIX,
    S_OUTPUT_PREFIX, S_MESSAGE_PREFIX, S_PROMPT_EVENT, S_COMPLETION_EVENT, S_PROMPT,
    S_COMPLETION, S_EXCEPTION, S_EXCEPTION_TYPE, S_EXCEPTION_MESSAGE, S_COLON, S_NAME, S_TIME,
    S_ATTRIBUTES, S_STRIP, S_UPPER, S_TIME_NS, S_TRACE_ID, S_SPAN_ID, S_PARENT_SPAN_ID, S_KIND,
    S_START_NS, S_END_NS, S_STATUS_CODE, S_STATUS_MESSAGE, S_SCOPE, S_EVENTS, S_LINKS,
    S_DROPPED_ATTRIBUTES, S_DROPPED_EVENTS, S_DROPPED_LINKS, STRING_COUNT
};

/* One attribute name of the table: the field it fills, its rank, how its value converts. */
typedef struct {
    int field;
    int rank;
    int converter; /* a CONVERT_* of _span_map.c */
    Py_ssize_t limit; /* characters, for text columns */
} TableEntry;

/* Set once by configure_mapping() from mapping.py, so the vocabulary lives in one place. */
typedef struct {
    PyObject *table; /* dict: attribute name -> index into entries */
    TableEntry entries[MAX_TABLE_ENTRIES];
    PyObject *span_kinds;          /* frozenset of Keel's span kinds */
    PyObject *openinference_kinds; /* dict */
    PyObject *operations;          /* dict: gen_ai.operation.name -> kind */
    PyObject *otel_kinds;          /* dict: OTLP SpanKind -> name */
    PyObject *statuses;            /* dict: OTLP status code -> "ok" / "error" */
    PyObject *dumps;               /* orjson.dumps */
    PyObject *price;               /* mapping._price */
    PyObject *truncated_marker;
    Py_ssize_t name_length; /* of the name column */
    Py_ssize_t tag_length;  /* of one tag */
    Py_ssize_t max_tags;
    PyObject *s[STRING_COUNT]; /* constant strings, interned (STRING_TEXT in _span_map.c) */
    int configured;
} MapConfig;

/* One call's options (mapping.MappingOptions). */
typedef struct {
    int store_payloads;
    Py_ssize_t payload_max;
    Py_ssize_t text_max;
    PyObject *customer; /* str or None */
    PyObject *pricer;
} MapOptions;

/* A decoded span, as OtlpSpan holds it: borrowed references, except that `attributes` is taken
 * over (mapped attributes leave it, OTLP's own fields join it). */
typedef struct {
    PyObject *trace_id, *span_id, *parent_span_id, *name, *kind;
    double start_s, end_s;
    PyObject *status_code, *status_message, *attributes, *scope, *events, *links;
    PyObject *dropped_attributes, *dropped_events, *dropped_links;
} SpanView;

/* The row (keel.storage.spans_repo.SPAN_COLUMNS order) of one span, as mapping.to_row makes
 * it; NULL with an exception set on failure. */
PyObject *map_view(const MapConfig *config, const MapOptions *options, SpanView *span);

/* Parses the `options` tuple of map_spans and decode_rows; 0, or -1 with an exception set. */
int parse_map_options(PyObject *tuple, MapOptions *out);

/* Whether this is the first copy of the span in its export (the first copy wins, as in the
 * database): 1, and the key joins `seen` (a set); 0 for a repeat; -1 with an exception set. */
int first_copy(PyObject *seen, PyObject *trace_id, PyObject *span_id);

PyObject *configure_mapping(MapConfig *config, PyObject *args, PyObject *kwargs);
PyObject *map_spans(const MapConfig *config, PyObject *args);
int traverse_mapping(MapConfig *config, visitproc visit, void *arg);
void clear_mapping(MapConfig *config);

#endif
