/* test_core.c: unit tests of the portable core's pure parts (SHA-256,
 * versions, image heads, the JSON bodies, backoff), run by `make test`
 * under ASan and UBSan. The state machine is tested end to end against the
 * real server (crates/ota-server/tests/api/esp_idf_client.rs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ota_core.h"
#include "ota_sha256.h"

static int failed_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failed_checks++;                                                         \
        }                                                                            \
    } while (0)

static void hex(const uint8_t *bytes, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", bytes[i]);
    }
}

static void sha256_matches_the_fips_vectors(void)
{
    static const struct {
        const char *input;
        const char *digest;
    } vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        ota_sha256_t sha;
        uint8_t digest[32];
        char text[65];
        ota_sha256_init(&sha);
        ota_sha256_update(&sha, vectors[i].input, strlen(vectors[i].input));
        ota_sha256_finish(&sha, digest);
        hex(digest, 32, text);
        CHECK(strcmp(text, vectors[i].digest) == 0);
    }
    /* A million 'a's fed in uneven pieces. */
    ota_sha256_t sha;
    uint8_t digest[32];
    char text[65];
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    ota_sha256_init(&sha);
    size_t left = 1000000;
    while (left > 0) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        ota_sha256_update(&sha, chunk, n);
        left -= n;
    }
    ota_sha256_finish(&sha, digest);
    hex(digest, 32, text);
    CHECK(strcmp(text, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

static int cmp(const char *a, const char *b)
{
    bool ok;
    int c = ota_version_compare(a, b, &ok);
    return ok ? c : 99;
}

/* Every line of the shared vectors file (see its header). */
static void versions_order_as_the_server_orders_them(const char *vectors)
{
    FILE *f = fopen(vectors, "r");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    char line[256];
    int checked = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        checked++;
        if (line[0] == '!') {
            const char *text = line[1] == ' ' ? line + 2 : line + 1;
            if (cmp(text, "1.0.0") != 99) {
                fprintf(stderr, "read as a version, but the server refuses it: '%s'\n", text);
                failed_checks++;
            }
            continue;
        }
        char a[128], op[4], b[128];
        CHECK(sscanf(line, "%127s %3s %127s", a, op, b) == 3);
        int want = op[0] == '<' ? -1 : op[0] == '>' ? 1 : 0;
        int got = cmp(a, b), back = cmp(b, a);
        if (got != want || back != -want) {
            fprintf(stderr, "%s: got %d and %d\n", line, got, back);
            failed_checks++;
        }
    }
    fclose(f);
    CHECK(checked > 40);
}

/* A made-up image head: header, segment header, app descriptor. */
static void make_head(uint8_t *buf, uint16_t chip, const char *version, const char *project, uint32_t secure)
{
    memset(buf, 0, OTA_IMAGE_HEAD_LEN);
    buf[0] = 0xE9;
    buf[1] = 3;
    buf[0x0C] = (uint8_t)chip;
    buf[0x0F] = 100;
    buf[0x11] = 199;
    const uint8_t magic[4] = {0x32, 0x54, 0xCD, 0xAB};
    memcpy(buf + 0x20, magic, 4);
    buf[0x24] = (uint8_t)secure;
    memcpy(buf + 0x30, version, strlen(version));
    memcpy(buf + 0x50, project, strlen(project));
}

static void image_heads_are_read_and_judged(void)
{
    uint8_t buf[OTA_IMAGE_HEAD_LEN];
    ota_image_info_t info;
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_OK);
    CHECK(info.chip_id == 18 && info.min_chip_rev == 100 && info.max_chip_rev == 199);
    CHECK(info.secure_version == 2);
    CHECK(strcmp(info.version, "1.1.0") == 0 && strcmp(info.project_name, "scales_bridge") == 0);
    CHECK(ota_image_read_head(buf, sizeof buf - 1, &info) == OTA_ERR_IMAGE);
    buf[0] = 0xEA;
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_ERR_IMAGE);
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    buf[0x20] = 0;
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_ERR_IMAGE);
    /* A 32-byte field without its NUL is read whole, never past its end. */
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    memset(buf + 0x50, 'p', 32);
    CHECK(ota_image_read_head(buf, sizeof buf, &info) == OTA_OK && strlen(info.project_name) == 32);

    ota_app_info_t running = {.version = "1.0.0", .project_name = "scales_bridge", .chip_id = 18, .secure_version = 2};
    char why[128];
    make_head(buf, 18, "1.1.0", "scales_bridge", 2);
    ota_image_read_head(buf, sizeof buf, &info);
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_OK);
    info.chip_id = 13;
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_ERR_IMAGE && strstr(why, "chip id 13"));
    info.chip_checked_by_platform = true;
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_OK);
    info.chip_id = 18;
    strcpy(info.project_name, "other");
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_ERR_IMAGE && strstr(why, "project"));
    strcpy(info.project_name, "scales_bridge");
    strcpy(info.version, "1.0.0");
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_ERR_IMAGE && strstr(why, "not newer"));
    /* The same version is taken when the offer's build number is higher. */
    CHECK(ota_image_fits(&running, &info, true, why, sizeof why) == OTA_OK);
    strcpy(info.version, "0.9.0");
    CHECK(ota_image_fits(&running, &info, true, why, sizeof why) == OTA_ERR_IMAGE);
    strcpy(info.version, "v1.0.0-dirty");
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_ERR_IMAGE);
    strcpy(info.version, "v1.0.0-1-g1234abc");
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_OK);
    strcpy(info.version, "1.1.0");
    info.secure_version = 1;
    CHECK(ota_image_fits(&running, &info, false, why, sizeof why) == OTA_ERR_IMAGE && strstr(why, "anti-rollback"));
}

static void check_answers_are_parsed_strictly(void)
{
    ota_update_t u;
    const char *offer =
        "{\"update_available\":true,\"firmware_id\":12,\"version\":\"1.1.0\",\"build_number\":7,"
        "\"file_size\":1523456,\"file_hash\":\"00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\","
        "\"download_url\":\"http://h/api/ota/download/12?expires=1&sig=x\",\"release_notes\":null,"
        "\"is_mandatory\":true,\"log_id\":991}";
    CHECK(ota_parse_check_answer(offer, &u) == OTA_OK);
    CHECK(u.update_available && u.firmware_id == 12 && u.build_number == 7 && u.log_id == 991);
    CHECK(u.file_size == 1523456 && u.is_mandatory && strcmp(u.version, "1.1.0") == 0);
    CHECK(u.file_hash[0] == 0x00 && u.file_hash[5] == 0x55 && u.file_hash[31] == 0xFF);
    CHECK(strcmp(u.download_url, "http://h/api/ota/download/12?expires=1&sig=x") == 0);

    CHECK(ota_parse_check_answer("{\"update_available\":false,\"current_version\":\"1.0.0\"}", &u) == OTA_OK);
    CHECK(!u.update_available);

    static const char *broken[] = {
        "", "[]", "{}", "{\"update_available\":\"yes\"}", "{\"update_available\":true}",
        "{\"update_available\":true,\"firmware_id\":-1,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1.5,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"1\",\"file_size\":1,\"file_hash\":"
        "\"0011\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"1\",\"file_size\":0,\"file_hash\":"
        "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\",\"download_url\":\"x\"}",
        "{\"update_available\":true,\"firmware_id\":1,\"version\":\"0123456789012345678901234567890123456789012345678901234567890123456789\","
        "\"file_size\":1,\"file_hash\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\","
        "\"download_url\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        CHECK(ota_parse_check_answer(broken[i], &u) == OTA_ERR_PROTOCOL);
    }
    CHECK(ota_parse_check_answer(NULL, &u) == OTA_ERR_PROTOCOL);
}

static void request_bodies_say_what_the_api_names(void)
{
    ota_core_config_t cfg = {.device_type = "scales_bridge_tab5", .channel = "beta", .build_number = 3};
    ota_app_info_t running = {.version = "1.0.0", .secure_version = 2};
    char *body = ota_build_check_request(&cfg, &running, true);
    CHECK(body != NULL && strcmp(body, "{\"device_type\":\"scales_bridge_tab5\",\"current_version\":\"1.0.0\","
                                       "\"secure_version\":2,\"build_number\":3,\"channel\":\"beta\"}") == 0);
    free(body);
    cfg.channel = NULL;
    cfg.build_number = -1;
    body = ota_build_check_request(&cfg, &running, false);
    CHECK(body != NULL && strstr(body, "channel") == NULL && strstr(body, "build_number") == NULL);
    CHECK(strstr(body, "secure_version") == NULL);
    free(body);

    body = ota_build_status_request(12, OTA_STATUS_DOWNLOADING, 40, NULL);
    CHECK(body != NULL && strcmp(body, "{\"firmware_id\":12,\"status\":\"downloading\",\"progress\":40}") == 0);
    free(body);
    body = ota_build_status_request(12, OTA_STATUS_FAILED, -1, "rollback: \"1.0.0\" runs again");
    CHECK(body != NULL &&
          strcmp(body, "{\"firmware_id\":12,\"status\":\"failed\",\"error_message\":\"rollback: \\\"1.0.0\\\" runs "
                       "again\"}") == 0);
    free(body);
}

static void backoff_doubles_up_to_its_cap_with_jitter(void)
{
    /* Equal jitter: between half and all of base * 2^(n-1), capped. */
    for (uint32_t failures = 1; failures <= 40; failures++) {
        uint64_t full = 1000;
        for (uint32_t i = 1; i < failures && full < 60000; i++) {
            full *= 2;
        }
        if (full > 60000) {
            full = 60000;
        }
        uint32_t low = ota_backoff_ms(failures, 1000, 60000, 0);
        uint32_t high = ota_backoff_ms(failures, 1000, 60000, UINT32_MAX);
        CHECK(low == full / 2);
        CHECK(high >= low && high <= full);
    }
    CHECK(ota_backoff_ms(1, 1000, 60000, 123) != ota_backoff_ms(1, 1000, 60000, 124));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_core VERSION_VECTORS_FILE\n");
        return 2;
    }
    sha256_matches_the_fips_vectors();
    versions_order_as_the_server_orders_them(argv[1]);
    image_heads_are_read_and_judged();
    check_answers_are_parsed_strictly();
    request_bodies_say_what_the_api_names();
    backoff_doubles_up_to_its_cap_with_jitter();
    if (failed_checks > 0) {
        fprintf(stderr, "%d check(s) failed\n", failed_checks);
        return 1;
    }
    printf("test_core: all checks passed\n");
    return 0;
}
