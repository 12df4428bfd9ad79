/* ota_port_host.h: the Linux stand-in for an ESP32 under the portable core.
 *
 * A "device" is a folder:
 *   slot0.bin, slot1.bin  the two OTA app partitions (ota_0, ota_1)
 *   otadata               which slot boots next and its state, as the
 *                         bootloader's otadata partition would say
 *   nvs/<key>             one file per NVS key, replaced atomically
 * HTTP goes through libcurl, the way esp_https_ota's partial download mode
 * does it: a HEAD, then Range requests of piece_size bytes on one kept-alive
 * connection. */
#ifndef OTA_PORT_HOST_H
#define OTA_PORT_HOST_H

#include <curl/curl.h>

#include "ota_port.h"

typedef enum {
    HOST_SLOT_VALID = 0,
    HOST_SLOT_NEW,            /* activated, not booted yet */
    HOST_SLOT_PENDING_VERIFY, /* booted once, not confirmed */
    HOST_SLOT_ABORTED,        /* rolled back */
} host_slot_state_t;

typedef struct {
    char dir[512];
    int running_slot;           /* 0 or 1, chosen by host_boot() */
    host_slot_state_t running_state;
    int boot_slot;              /* otadata: the slot the next boot takes */
    host_slot_state_t boot_state;
    bool reboot_requested;
    uint64_t power_cut_at;      /* 0: never; else end the process once this many bytes are in flash */
    bool power_cut_after_activation; /* end the process right after otadata names the new slot */
    int quiet;
    CURL *download;             /* kept between pieces: one connection, like esp_https_ota */
} host_device_t;

/* The platform vtable over a host_device_t. */
extern const ota_platform_t host_platform;

/* What the ROM bootloader and the second-stage bootloader do at reset:
 * read otadata, roll back a slot that never confirmed itself, and pick the
 * slot to run. Prints one "boot ..." line. */
ota_err_t host_boot(host_device_t *dev);

/* Frees what host_boot and the platform calls opened. */
void host_device_close(host_device_t *dev);

#endif /* OTA_PORT_HOST_H */
