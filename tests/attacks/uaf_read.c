/* Use-after-free read of a secret: a block holding a secret (a key, a password) is freed.
 * Does the secret survive where the next user can see it: through the dangling pointer,
 * or in a new allocation of the same size (which the program may send out without fully
 * initialising it, as in Heartbleed-style leaks)? */
#include "attack.h"

static const char secret[] = "correct horse battery staple";

/* The secret anywhere in [p, p + n). */
static bool holds_secret(const volatile char *p, size_t n)
{
    size_t len = sizeof secret - 1;
    for (size_t i = 0; i + len <= n; i++) {
        size_t k = 0;
        while (k < len && p[i + k] == secret[k])
            k++;
        if (k == len)
            return true;
    }
    return false;
}

int main(int argc, char **argv)
{
    size_t request = attack_request(attack_tier(argc, argv));
    char *p = malloc(request);
    /* Past the first 16 bytes, where many allocators write their free-list links. */
    for (size_t at = 16; at + sizeof secret <= request; at += 1024)
        memcpy(p + at, secret, sizeof secret);
    free(p);
    if (holds_secret(launder(p), request))
        attack_succeeded("the secret is still readable through the dangling pointer %p", (void *)p);
    char *q = malloc(request);
    if (holds_secret(q, request))
        attack_succeeded("a new allocation %p returned the freed secret", (void *)q);
    free(q);
    attack_failed("the secret is gone");
}
