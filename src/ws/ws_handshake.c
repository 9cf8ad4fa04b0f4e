#include "ws/ws_handshake.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

static const char websocket_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool hd_ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes encode to 22 characters and "==" padding. */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    unsigned char decoded[24];
    if (EVP_DecodeBlock(decoded, (const unsigned char *)key, 24) != 18)
        return false;
    /* The last character must not carry bits beyond the 16th byte. */
    static const char alphabet[] = "AEIMQUYcgkosw048";
    return strchr(alphabet, key[21]) != NULL;
}

void hd_ws_accept_key(const char *key, size_t len, char out[HD_WS_ACCEPT_SIZE])
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    EVP_DigestUpdate(ctx, key, len);
    EVP_DigestUpdate(ctx, websocket_guid, sizeof(websocket_guid) - 1);
    EVP_DigestFinal_ex(ctx, digest, NULL);
    EVP_MD_CTX_free(ctx);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}
