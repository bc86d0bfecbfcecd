"""Old path of ``routoo_shared.routing.tokens``, kept so that existing imports keep working.

The name is bound to that module itself (same objects, same state); new code imports the new path.
"""

import sys

from routoo_shared.routing import tokens as _module

sys.modules[__name__] = _module
