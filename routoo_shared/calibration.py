"""Old path of ``routoo_shared.predictors.calibration``, kept so that existing imports keep working.

The name is bound to that module itself (same objects, same state); new code imports the new path.
"""

import sys

from routoo_shared.predictors import calibration as _module

sys.modules[__name__] = _module
