/* ota_sha256.h: a small portable SHA-256 (FIPS 180-4), so the core checks
 * the downloaded image the same way on every platform. */
#ifndef OTA_SHA256_H
#define OTA_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;     /* bytes hashed so far */
    uint8_t block[64];
    size_t filled;
} ota_sha256_t;

void ota_sha256_init(ota_sha256_t *sha);
void ota_sha256_update(ota_sha256_t *sha, const void *data, size_t len);
void ota_sha256_finish(ota_sha256_t *sha, uint8_t digest[32]);

#endif /* OTA_SHA256_H */
