/* ota_host_main.c: ota-host-client, the portable OTA core on Linux. Each
 * "boot" does what the ESP-IDF task does after a reset: the bootloader picks
 * a slot, the boot verdict runs (self-test, confirm, report), then one poll
 * (check, download, activate). A reboot starts the next boot in the same
 * process; the device's state lives only in its folder, so a boot in a new
 * process continues where the last one stopped.
 *
 * Exit codes: 0 idle (nothing more to do), 1 the last poll failed, 2 usage,
 * 3 simulated power cut, 4 a reboot is due but --boots is used up. */
#define _POSIX_C_SOURCE 200809L
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_core.h"
#include "ota_port_host.h"

typedef struct {
    const char *server;
    const char *device_type;
    const char *device_dir;
    const char *channel;
    const char *token;
    long long build_number;
    unsigned long piece_size;
    unsigned long long power_cut_at;
    unsigned long retry_ms;
    int boots;
    bool self_test_passes;
    bool no_self_test; /* the core's default: a check must reach the server */
    bool check_only;
    bool power_cut_after_activation;
} options_t;

static void usage(FILE *to)
{
    fprintf(to,
            "usage: ota-host-client --server URL --device-type TYPE --device-dir DIR [options]\n"
            "\n"
            "Runs the ota_client core against a real server, with DIR standing in for\n"
            "the device's flash (slot0.bin, slot1.bin, otadata) and NVS (nvs/).\n"
            "slot0.bin must hold the app the device runs first.\n"
            "\n"
            "  --token TOKEN         device JWT (default: $OTA_DEVICE_TOKEN)\n"
            "  --channel NAME        update channel (default: the server's)\n"
            "  --build-number N      the running build's number\n"
            "  --piece-size BYTES    bytes per Range request (default 65536)\n"
            "  --retry-ms MS         first retry delay after a cut download (default 2000)\n"
            "  --boots N             boots to run in this process (default 3)\n"
            "  --power-cut-at BYTES  end the process abruptly once BYTES of the\n"
            "                        download are in flash (exit 3)\n"
            "  --power-cut-after-activation\n"
            "                        end the process abruptly right after the new\n"
            "                        slot is activated (exit 3)\n"
            "  --self-test pass|fail|none\n"
            "                        the application's self-test on a new app's first\n"
            "                        boot; none: the core's default (a check must get\n"
            "                        an answer from the server)\n"
            "  --check-only          boot, check once, print the answer and stop\n");
}

static bool parse_number(const char *text, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (text == NULL || *text == '\0' || *text == '-') {
        return false;
    }
    unsigned long long v = strtoull(text, &end, 10);
    if (*end != '\0' || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    *o = (options_t){.build_number = -1, .piece_size = 65536, .retry_ms = 2000, .boots = 3, .self_test_passes = true};
    o->token = getenv("OTA_DEVICE_TOKEN");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long n;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(arg, "--check-only") == 0) {
            o->check_only = true;
            continue;
        } else if (strcmp(arg, "--power-cut-after-activation") == 0) {
            o->power_cut_after_activation = true;
            continue;
        } else if (value == NULL) {
            fprintf(stderr, "ota-host-client: %s needs a value\n", arg);
            return 2;
        } else if (strcmp(arg, "--server") == 0) {
            o->server = value;
        } else if (strcmp(arg, "--device-type") == 0) {
            o->device_type = value;
        } else if (strcmp(arg, "--device-dir") == 0) {
            o->device_dir = value;
        } else if (strcmp(arg, "--channel") == 0) {
            o->channel = value;
        } else if (strcmp(arg, "--token") == 0) {
            o->token = value;
        } else if (strcmp(arg, "--build-number") == 0 && parse_number(value, 1ull << 53, &n)) {
            o->build_number = (long long)n;
        } else if (strcmp(arg, "--piece-size") == 0 && parse_number(value, 16u << 20, &n) && n >= 1024) {
            o->piece_size = (unsigned long)n;
        } else if (strcmp(arg, "--retry-ms") == 0 && parse_number(value, 600000, &n)) {
            o->retry_ms = (unsigned long)n;
        } else if (strcmp(arg, "--boots") == 0 && parse_number(value, 100, &n) && n >= 1) {
            o->boots = (int)n;
        } else if (strcmp(arg, "--power-cut-at") == 0 && parse_number(value, 1ull << 40, &n) && n >= 1) {
            o->power_cut_at = n;
        } else if (strcmp(arg, "--self-test") == 0 &&
                   (strcmp(value, "pass") == 0 || strcmp(value, "fail") == 0 || strcmp(value, "none") == 0)) {
            o->self_test_passes = strcmp(value, "pass") == 0;
            o->no_self_test = strcmp(value, "none") == 0;
        } else {
            fprintf(stderr, "ota-host-client: bad option or value: %s %s\n", arg, value);
            return 2;
        }
        i++;
    }
    if (o->server == NULL || o->device_type == NULL || o->device_dir == NULL) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static bool self_test(void *user)
{
    const options_t *o = user;
    printf("self-test %s\n", o->self_test_passes ? "passed" : "failed");
    return o->self_test_passes;
}

static const char *outcome_name(ota_boot_outcome_t outcome)
{
    switch (outcome) {
    case OTA_BOOT_CONFIRMED: return "confirmed";
    case OTA_BOOT_ROLLED_BACK: return "rolled_back";
    case OTA_BOOT_RESUMABLE: return "resumable";
    default: return "nothing";
    }
}

/* One boot. Returns the process's exit code, or -1 when the device reboots. */
static int run_boot(options_t *o, host_device_t *dev)
{
    if (host_boot(dev) != OTA_OK) {
        return 1;
    }
    ota_core_config_t cfg = {
        .server_url = o->server,
        .device_type = o->device_type,
        .channel = o->channel,
        .device_token = o->token,
        .build_number = o->build_number,
        .piece_size = (uint32_t)o->piece_size,
        .retry_base_ms = (uint32_t)o->retry_ms,
        .retry_max_ms = (uint32_t)o->retry_ms * 8,
        .self_test = o->no_self_test ? NULL : self_test,
        .self_test_user = o,
    };
    ota_core_t core;
    if (ota_core_init(&core, &cfg, &host_platform, dev) != OTA_OK) {
        fprintf(stderr, "ota-host-client: bad configuration\n");
        return 2;
    }
    ota_boot_outcome_t outcome;
    ota_err_t err = ota_core_on_boot(&core, &outcome);
    printf("verdict %s (%d)\n", outcome_name(outcome), err);
    if (dev->reboot_requested) {
        return -1;
    }
    if (o->check_only) {
        ota_update_t update;
        err = ota_core_check(&core, &update);
        if (err == OTA_OK) {
            printf("check update_available=%s firmware_id=%lld version=%s log_id=%lld is_downgrade=%s\n",
                   update.update_available ? "true" : "false", (long long)update.firmware_id, update.version,
                   (long long)update.log_id, update.is_downgrade ? "true" : "false");
        }
        return err == OTA_OK ? 0 : 1;
    }
    bool reboot = false;
    err = ota_core_poll(&core, &reboot);
    printf("poll %s (%d)%s%s\n", err == OTA_OK ? "ok" : "failed", err, core.last_error[0] ? ": " : "",
           core.last_error);
    if (reboot) {
        printf("rebooting\n");
        return -1;
    }
    return err == OTA_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    options_t o;
    int code = parse_options(argc, argv, &o);
    if (code != 0) {
        return code;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        return 1;
    }
    host_device_t dev = {.power_cut_at = o.power_cut_at, .power_cut_after_activation = o.power_cut_after_activation};
    snprintf(dev.dir, sizeof dev.dir, "%s", o.device_dir);
    code = 4;
    for (int boot = 0; boot < o.boots; boot++) {
        int result = run_boot(&o, &dev);
        if (result >= 0) {
            code = result;
            break;
        }
    }
    host_device_close(&dev);
    curl_global_cleanup();
    return code;
}
