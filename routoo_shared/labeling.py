"""Old path of ``routoo_shared.data.labeling``, kept so that existing imports keep working.

The name is bound to that module itself (same objects, same state); new code imports the new path.
"""

import sys

from routoo_shared.data import labeling as _module

sys.modules[__name__] = _module
