#include "http/request.h"

#include <string.h>
#include <strings.h>

void hd_request_init(hd_request *req)
{
    memset(req, 0, sizeof(*req));
    hd_strbuf_init(&req->target);
    hd_strbuf_init(&req->headers);
    hd_strbuf_init(&req->body);
}

void hd_request_reset(hd_request *req)
{
    req->method = 0;
    req->target.len = 0;
    req->headers.len = 0;
    req->header_count = 0;
    req->header_bytes = 0;
    req->body.len = 0;
    req->keep_alive = false;
    req->path = req->query = NULL;
    req->path_len = req->query_len = 0;
}

void hd_request_free(hd_request *req)
{
    hd_strbuf_free(&req->target);
    hd_strbuf_free(&req->headers);
    hd_strbuf_free(&req->body);
}

/* The length of the "http://authority" or "https://authority" that starts target, else 0. */
static size_t absolute_form_prefix(const char *target, size_t len)
{
    size_t i = len >= 7 && strncasecmp(target, "http://", 7) == 0    ? 7
               : len >= 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                     : 0;
    if (i == 0)
        return 0;
    while (i < len && target[i] != '/' && target[i] != '?')
        i++;
    return i;
}

void hd_request_split_target(hd_request *req)
{
    const char *target = req->target.data ? req->target.data : "";
    size_t len = req->target.len;
    size_t prefix = absolute_form_prefix(target, len);
    target += prefix;
    len -= prefix;
    const char *question = memchr(target, '?', len);
    size_t path_len = question ? (size_t)(question - target) : len;
    req->path = target;
    req->path_len = path_len;
    if (prefix > 0 && path_len == 0) {
        /* "http://host" and "http://host?q" name the root (RFC 9112 §3.2.1). */
        req->path = "/";
        req->path_len = 1;
    }
    req->query = question ? question + 1 : target + len;
    req->query_len = question ? len - path_len - 1 : 0;
}

const char *hd_request_header(const hd_request *req, const char *name, size_t *len)
{
    return hd_request_header_next(req, name, NULL, len);
}

const char *hd_request_header_next(const hd_request *req, const char *name, const char *prev,
                                   size_t *len)
{
    if (req->headers.data == NULL)
        return NULL;
    /* Bounded scans: an answer sent mid-parse meets a header still being read. */
    const char *p = req->headers.data;
    const char *end = p + req->headers.len;
    if (prev != NULL) {
        const char *prev_end = memchr(prev, '\0', (size_t)(end - prev));
        if (prev_end == NULL)
            return NULL;
        p = prev_end + 1;
    }
    size_t wanted = strlen(name);
    while (p < end) {
        const char *name_end = memchr(p, '\0', (size_t)(end - p));
        if (name_end == NULL)
            return NULL;
        const char *value = name_end + 1;
        const char *value_end = memchr(value, '\0', (size_t)(end - value));
        if (value_end == NULL)
            return NULL;
        if ((size_t)(name_end - p) == wanted && memcmp(p, name, wanted) == 0) {
            if (len)
                *len = (size_t)(value_end - value);
            return value;
        }
        p = value_end + 1;
    }
    return NULL;
}

/* Finds the next member of a comma-separated value from *pos, without surrounding OWS. */
static bool next_member(const char *value, size_t len, size_t *pos, size_t *start, size_t *end)
{
    size_t i = *pos;
    while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
        i++;
    if (i >= len)
        return false;
    *start = i;
    while (i < len && value[i] != ',')
        i++;
    *pos = i;
    while (i > *start && (value[i - 1] == ' ' || value[i - 1] == '\t'))
        i--;
    *end = i;
    return true;
}

static bool member_is(const char *value, size_t start, size_t end, const char *token)
{
    size_t token_len = strlen(token);
    return end - start == token_len && strncasecmp(value + start, token, token_len) == 0;
}

bool hd_header_has_token(const char *value, size_t len, const char *token)
{
    size_t pos = 0, start, end;
    while (next_member(value, len, &pos, &start, &end))
        if (member_is(value, start, end, token))
            return true;
    return false;
}

bool hd_header_only_token(const char *value, size_t len, const char *token)
{
    size_t pos = 0, start, end;
    while (next_member(value, len, &pos, &start, &end))
        if (!member_is(value, start, end, token))
            return false;
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long hd_percent_decode(const char *in, size_t len, char *out, bool plus_is_space)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[n++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[n++] = (plus_is_space && c == '+') ? ' ' : c;
        }
    }
    return (long)n;
}

void hd_query_iter_init(hd_query_iter *it, const hd_request *req)
{
    it->query = req->query;
    it->len = req->query_len;
    it->pos = 0;
    hd_strbuf_init(&it->value);
}

static size_t decode_part(const char *in, size_t len, char *out)
{
    long n = hd_percent_decode(in, len, out, true);
    if (n < 0) {
        memcpy(out, in, len);
        return len;
    }
    return (size_t)n;
}

bool hd_query_next(hd_query_iter *it, hd_query_param *param)
{
    while (it->pos < it->len) {
        const char *start = it->query + it->pos;
        const char *amp = memchr(start, '&', it->len - it->pos);
        size_t part_len = amp ? (size_t)(amp - start) : it->len - it->pos;
        it->pos += part_len + (amp ? 1 : 0);
        if (part_len == 0)
            continue;
        const char *eq = memchr(start, '=', part_len);
        size_t key_len = eq ? (size_t)(eq - start) : part_len;
        const char *value = eq ? eq + 1 : start + part_len;
        size_t value_len = eq ? part_len - key_len - 1 : 0;

        char key[sizeof(param->key) * 3];
        size_t raw_key_len = key_len < sizeof(key) ? key_len : sizeof(key);
        size_t decoded = decode_part(start, raw_key_len, key);
        param->key_len = decoded < sizeof(param->key) - 1 ? decoded : sizeof(param->key) - 1;
        memcpy(param->key, key, param->key_len);
        param->key[param->key_len] = '\0';

        it->value.len = 0;
        hd_strbuf_reserve(&it->value, value_len + 1);
        param->value_len = decode_part(value, value_len, it->value.data);
        it->value.data[param->value_len] = '\0';
        param->value = it->value.data;
        return true;
    }
    return false;
}

void hd_query_iter_free(hd_query_iter *it)
{
    hd_strbuf_free(&it->value);
}
