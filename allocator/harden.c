/* Secret keys of harden.h. */
#include "harden.h"

#include "../common/platform.h"

struct mt_secrets mt_secrets;

void mt_secrets_init(void)
{
    mt_os_random(&mt_secrets, sizeof mt_secrets);
    /* A zero key would make encoding the identity for that field; vanishingly unlikely,
     * but cheap to exclude. */
    mt_secrets.header_key |= 1;
    mt_secrets.link_key |= 1;
    mt_secrets.canary_key |= 1;
}
