#include "herald/settings.h"

#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "herald/alloc.h"
#include "herald/log.h"
#include "net/tls.h"

/* Keys that load but leave herald weaker than the operator probably meant. */
static void warn_weak_keys(const hd_config *config)
{
    size_t secret_len = strlen(config->auth.jwt_secret);
    if (secret_len > 0 && secret_len < 32)
        hd_log_warn("auth.jwt_secret is %zu bytes: HS256 wants at least 32 (RFC 7518 §3.2); "
                    "it is used as raw bytes, not decoded",
                    secret_len);
    bool keys = secret_len > 0 || config->auth.jwt_public_key[0] != '\0';
    if (!keys && !(config->auth.anonymous_publish && config->auth.anonymous_subscribe))
        hd_log_warn("auth: no jwt_secret or jwt_public_key is set, so no token is accepted: "
                    "only what anonymous_publish and anonymous_subscribe allow can be done");
}

hd_settings *hd_settings_new(hd_config *config, char *err, size_t err_len)
{
    hd_settings *settings = hd_calloc(1, sizeof(*settings));
    /* Moved in first: the auth keeps a pointer to the config, which must be this copy. */
    settings->config = *config;
    settings->auth = hd_auth_new(&settings->config, err, err_len);
    if (settings->auth == NULL)
        goto fail;
    /* The config loader insists on both tls.cert and tls.key or neither. */
    if (settings->config.tls.cert[0] != '\0') {
        settings->tls =
            hd_tls_ctx_new(settings->config.tls.cert, settings->config.tls.key, err, err_len);
        if (settings->tls == NULL)
            goto fail;
    }
    warn_weak_keys(&settings->config);
    memset(config, 0, sizeof(*config));
    settings->refs = 1;
    return settings;
fail:
    hd_auth_free(settings->auth);
    free(settings);
    return NULL;
}

hd_settings *hd_settings_ref(hd_settings *settings)
{
    __atomic_add_fetch(&settings->refs, 1, __ATOMIC_RELAXED);
    return settings;
}

void hd_settings_release(hd_settings *settings)
{
    /* Release, so that the thread that frees sees every other thread's last use. */
    if (settings == NULL || __atomic_sub_fetch(&settings->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    hd_tls_ctx_free(settings->tls); /* sessions still open keep the SSL_CTX by its own count */
    hd_auth_free(settings->auth);
    hd_config_free(&settings->config);
    free(settings);
}

unsigned hd_settings_take(hd_settings *settings)
{
    return __atomic_add_fetch(&settings->taken, 1, __ATOMIC_RELAXED);
}
