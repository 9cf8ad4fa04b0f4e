#include "ops/token_tool.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "herald/alloc.h"
#include "herald/buf.h"

/* Patterns per claim: as many as herald reads (jwt.c). */
#define MAX_PATTERNS 256
#define MAX_SECRET_BYTES (64 << 10)

typedef struct token_request {
    const char *secret_file;
    const char *private_key;
    const char *publish[MAX_PATTERNS];
    int publish_count;
    const char *subscribe[MAX_PATTERNS];
    int subscribe_count;
    long long ttl_s; /* 0: no exp claim */
    const char *sub;
} token_request;

static void print_usage(FILE *out)
{
    fputs("Usage: herald token (--secret-file FILE | --private-key FILE) [options]\n"
          "\n"
          "Prints a signed token herald accepts: HS256 with the secret in FILE (as\n"
          "auth.jwt_secret_file reads it: one trailing newline dropped), or RS256 /\n"
          "ES256 with a PEM private key (RSA of 2048 bits or more, or P-256 EC).\n"
          "\n"
          "  -p, --publish PATTERN    may publish to matching topics ('*' is any run\n"
          "                           of characters); repeatable\n"
          "  -s, --subscribe PATTERN  may subscribe to matching topics; repeatable\n"
          "  -t, --ttl DURATION       lifetime: N, Ns, Nm, Nh or Nd (default 1h);\n"
          "                           0 for a token without exp\n"
          "      --sub NAME           the sub claim (who the token is for)\n"
          "  -h, --help               show this help and exit\n",
          out);
}

/* "90", "90s", "15m", "1h", "7d" as seconds; -1 when malformed. */
static long long parse_ttl(const char *text)
{
    char *end;
    long long n = strtoll(text, &end, 10);
    if (end == text || n < 0 || text[0] == '-' || text[0] == '+' || text[0] == ' ')
        return -1;
    long long unit = strcmp(end, "") == 0 || strcmp(end, "s") == 0 ? 1
                     : strcmp(end, "m") == 0                       ? 60
                     : strcmp(end, "h") == 0                       ? 3600
                     : strcmp(end, "d") == 0                       ? 86400
                                                                   : -1;
    /* Ten years is plenty, and keeps exp far from any overflow. */
    if (unit < 0 || n > 315360000 / unit)
        return -1;
    return n * unit;
}

static int parse_arguments(int argc, char **argv, token_request *req)
{
    enum { OPT_SECRET_FILE = 256, OPT_PRIVATE_KEY, OPT_SUB };
    static const struct option long_options[] = {
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"private-key", required_argument, NULL, OPT_PRIVATE_KEY},
        {"publish", required_argument, NULL, 'p'},
        {"subscribe", required_argument, NULL, 's'},
        {"ttl", required_argument, NULL, 't'},
        {"sub", required_argument, NULL, OPT_SUB},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    req->ttl_s = 3600;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":p:s:t:h", long_options, NULL)) != -1) {
        switch (opt) {
        case OPT_SECRET_FILE:
            req->secret_file = optarg;
            break;
        case OPT_PRIVATE_KEY:
            req->private_key = optarg;
            break;
        case 'p':
        case 's': {
            const char **list = opt == 'p' ? req->publish : req->subscribe;
            int *count = opt == 'p' ? &req->publish_count : &req->subscribe_count;
            if (*count == MAX_PATTERNS) {
                fprintf(stderr, "herald token: at most %d patterns per claim\n", MAX_PATTERNS);
                return -1;
            }
            list[(*count)++] = optarg;
            break;
        }
        case 't':
            req->ttl_s = parse_ttl(optarg);
            if (req->ttl_s < 0) {
                fprintf(stderr, "herald token: --ttl: expected N, Ns, Nm, Nh or Nd (got '%s')\n",
                        optarg);
                return -1;
            }
            break;
        case OPT_SUB:
            req->sub = optarg;
            break;
        case 'h':
            print_usage(stdout);
            exit(0);
        case ':':
            fprintf(stderr, "herald token: option %s needs a value (see --help)\n",
                    argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "herald token: unknown option %s (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herald token: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if ((req->secret_file == NULL) == (req->private_key == NULL)) {
        fputs("herald token: give --secret-file or --private-key (one of them)\n", stderr);
        return -1;
    }
    return 0;
}

static void append_base64url(hd_strbuf *out, const unsigned char *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t bits = 0;
    int held = 0;
    for (size_t i = 0; i < len; i++) {
        bits = bits << 8 | data[i];
        held += 8;
        while (held >= 6) {
            held -= 6;
            hd_strbuf_append(out, &alphabet[(bits >> held) & 63], 1);
        }
    }
    if (held > 0)
        hd_strbuf_append(out, &alphabet[(bits << (6 - held)) & 63], 1);
}

static char *claims_json(const token_request *req)
{
    cJSON *claims = cJSON_CreateObject();
    if (req->sub != NULL)
        cJSON_AddStringToObject(claims, "sub", req->sub);
    long long now = (long long)time(NULL);
    cJSON_AddNumberToObject(claims, "iat", (double)now);
    if (req->ttl_s > 0)
        cJSON_AddNumberToObject(claims, "exp", (double)(now + req->ttl_s));
    cJSON *herald = cJSON_AddObjectToObject(claims, "herald");
    cJSON_AddItemToObject(herald, "publish",
                          cJSON_CreateStringArray(req->publish, req->publish_count));
    cJSON_AddItemToObject(herald, "subscribe",
                          cJSON_CreateStringArray(req->subscribe, req->subscribe_count));
    char *text = cJSON_PrintUnformatted(claims);
    cJSON_Delete(claims);
    return text;
}

/* The secret as auth.jwt_secret_file reads it; NULL after saying why. */
static char *read_secret(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "herald token: --secret-file: cannot read '%s'\n", path);
        return NULL;
    }
    char *secret = hd_alloc(MAX_SECRET_BYTES + 2);
    size_t len = fread(secret, 1, MAX_SECRET_BYTES + 1, f);
    fclose(f);
    if (len > 0 && secret[len - 1] == '\n')
        len--;
    if (len > 0 && secret[len - 1] == '\r')
        len--;
    secret[len] = '\0';
    if (len == 0 || len > MAX_SECRET_BYTES || strlen(secret) != len) {
        fprintf(stderr,
                "herald token: --secret-file: '%s' is empty, larger than 64 KiB or holds "
                "a NUL byte\n",
                path);
        free(secret);
        return NULL;
    }
    return secret;
}

/* An ECDSA signature's DER as JWS wants it (RFC 7518 §3.4): R and S, 32 bytes each. */
static bool der_to_raw(const unsigned char *der, size_t der_len, unsigned char raw[64])
{
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &der, (long)der_len);
    if (sig == NULL)
        return false;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    bool ok = BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(s, raw + 32, 32) == 32;
    ECDSA_SIG_free(sig);
    return ok;
}

/* Signs input with key's algorithm into sig (at most 512 bytes); its length, or 0. */
static size_t sign_with_key(EVP_PKEY *key, bool ec, const char *input, size_t len,
                            unsigned char *sig)
{
    unsigned char der[512];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
              EVP_DigestSign(md, der, &der_len, (const unsigned char *)input, len) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return 0;
    if (ec)
        return der_to_raw(der, der_len, sig) ? 64 : 0;
    memcpy(sig, der, der_len);
    return der_len;
}

/* The private key and the public key PEM that verifies it (herald's check); NULL after why. */
static EVP_PKEY *read_private_key(const char *path, char **public_pem)
{
    BIO *bio = BIO_new_file(path, "r");
    EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key == NULL) {
        fprintf(stderr, "herald token: --private-key: cannot read a PEM private key from '%s'\n",
                path);
        return NULL;
    }
    BIO *mem = BIO_new(BIO_s_mem());
    char *data;
    PEM_write_bio_PUBKEY(mem, key);
    long len = BIO_get_mem_data(mem, &data);
    *public_pem = hd_strndup(data, (size_t)len);
    BIO_free(mem);
    return key;
}

int hd_token_tool(int argc, char **argv)
{
    token_request req = {0};
    if (parse_arguments(argc, argv, &req) != 0)
        return 2;
    char *secret = NULL, *public_pem = NULL;
    EVP_PKEY *key = NULL;
    if (req.secret_file != NULL)
        secret = read_secret(req.secret_file);
    else
        key = read_private_key(req.private_key, &public_pem);
    if (secret == NULL && key == NULL)
        return 2;
    bool ec = key != NULL && EVP_PKEY_is_a(key, "EC");
    const char *header = secret != NULL ? "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
                         : ec           ? "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"
                                        : "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    char *claims = claims_json(&req);
    hd_strbuf token;
    hd_strbuf_init(&token);
    append_base64url(&token, (const unsigned char *)header, strlen(header));
    hd_strbuf_append(&token, ".", 1);
    append_base64url(&token, (const unsigned char *)claims, strlen(claims));
    free(claims);
    unsigned char sig[512];
    size_t sig_len = 0;
    if (secret != NULL) {
        unsigned int mac_len = 0;
        HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)token.data,
             token.len, sig, &mac_len);
        sig_len = mac_len;
    } else {
        sig_len = sign_with_key(key, ec, token.data, token.len, sig);
    }
    hd_strbuf_append(&token, ".", 1);
    append_base64url(&token, sig, sig_len);

    /* Verified as herald would: a key or pattern herald refuses is an error here, not later. */
    char err[256] = "";
    hd_jwt_keys *keys = hd_jwt_keys_new(secret != NULL ? secret : "",
                                        public_pem != NULL ? public_pem : "", err, sizeof(err));
    hd_jwt_grant grant = {0};
    hd_jwt_result result =
        keys != NULL && sig_len > 0
            ? hd_jwt_verify(keys, token.data, token.len, (int64_t)time(NULL) * 1000, &grant)
            : HD_JWT_BAD_SIGNATURE;
    int status = 0;
    if (result == HD_JWT_OK) {
        fwrite(token.data, 1, token.len, stdout);
        fputc('\n', stdout);
    } else {
        /* The key's message names the config key; for the tool it is the --private-key file. */
        const char *why = keys == NULL ? strchr(err, ':') + 2
                          : result == HD_JWT_BAD_CLAIMS
                              ? "a pattern is not a valid topic name with '*' wildcards"
                              : hd_jwt_result_message(result);
        fprintf(stderr, "herald token: %s\n", why);
        status = 2;
    }
    hd_jwt_grant_free(&grant);
    hd_jwt_keys_free(keys);
    hd_strbuf_free(&token);
    if (secret != NULL) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
    free(public_pem);
    EVP_PKEY_free(key);
    return status;
}
