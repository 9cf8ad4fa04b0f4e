/* The strict config loader on arbitrary documents. */
#include <stdint.h>

#include "herald/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_config config;
    char err[HD_CONFIG_ERROR_MAX];
    hd_config_init(&config);
    hd_config_apply_json(&config, (const char *)data, size, err, sizeof(err));
    hd_config_free(&config);
    return 0;
}
