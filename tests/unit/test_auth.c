/* Credentials: the stored hash and the comparison against it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chunkd/auth.h"

#define SHA_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA_ABC_UPPER "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void test_hash_known_values(void **state)
{
    (void)state;
    char out[65];
    assert_int_equal(auth_hash_credential("abc", 3, out), 0);
    assert_string_equal(out, SHA_ABC);
    assert_int_equal(auth_hash_credential("", 0, out), 0);
    assert_string_equal(out, SHA_EMPTY);
    /* The length decides, not a terminator. */
    assert_int_equal(auth_hash_credential("abcdef", 3, out), 0);
    assert_string_equal(out, SHA_ABC);
    assert_int_equal(auth_hash_credential("a\0c", 3, out), 0);
    assert_string_not_equal(out, SHA_ABC);
    assert_int_equal(strlen(out), 64);
}

static void test_matches(void **state)
{
    (void)state;
    assert_true(auth_credential_matches("abc", 3, SHA_ABC));
    assert_true(auth_credential_matches("abc", 3, SHA_ABC_UPPER));
    assert_true(auth_credential_matches("abcdef", 3, SHA_ABC));

    assert_false(auth_credential_matches("abd", 3, SHA_ABC));
    assert_false(auth_credential_matches("ab", 2, SHA_ABC));
    assert_false(auth_credential_matches("abc ", 4, SHA_ABC));
    assert_false(auth_credential_matches("ABC", 3, SHA_ABC));
}

/* An empty credential never matches, not even a stored hash of "". */
static void test_empty_credential(void **state)
{
    (void)state;
    assert_false(auth_credential_matches("", 0, SHA_EMPTY));
    assert_false(auth_credential_matches("abc", 0, SHA_ABC));
}

static void test_bad_stored_hash(void **state)
{
    (void)state;
    char h[80];
    static const char *const bad[] = {
        "",
        "ba7816bf",
        /* 63 and 65 digits */
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
        SHA_ABC "0",
        /* 64 characters, one of them not hex */
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag",
        " a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(auth_credential_matches("abc", 3, bad[i]));

    /* A stored hash one digit off does not match. */
    strcpy(h, SHA_ABC);
    h[63] = 'c';
    assert_false(auth_credential_matches("abc", 3, h));
    h[63] = 'd';
    h[0] = 'c';
    assert_false(auth_credential_matches("abc", 3, h));
}

/* A realistic token: what `chunkctl user add` prints, stored as its hash. */
static void test_roundtrip_token(void **state)
{
    (void)state;
    const char *token = "c3VwZXItc2VjcmV0LXRva2VuLWZvci11c2VyLTEyMw";
    char stored[65];
    assert_int_equal(auth_hash_credential(token, strlen(token), stored), 0);
    assert_true(auth_credential_matches(token, strlen(token), stored));
    char other[64];
    strcpy(other, token);
    other[0] = 'd';
    assert_false(auth_credential_matches(other, strlen(other), stored));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_known_values),
        cmocka_unit_test(test_matches),
        cmocka_unit_test(test_empty_credential),
        cmocka_unit_test(test_bad_stored_hash),
        cmocka_unit_test(test_roundtrip_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
