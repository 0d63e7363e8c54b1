"""Teacher feature store (`embed`) and our reconstruction of CLIP-CID's image semantic balance (`balance`).

Readers for later stages (docs/features.md): `FeatureStore` (teacher features by row / key), `CachedTeacher`
(a training batch's cached teacher outputs, `CachedFeatures`), `BalanceResult` (kept keys, cluster labels, centroids);
`replay` re-applies a stored augmentation.
"""

from clipdistill.features.augment import replay
from clipdistill.features.balance_output import BalanceResult
from clipdistill.features.cached import CachedFeatures, CachedTeacher
from clipdistill.features.store import FeatureStore

__all__ = ["BalanceResult", "CachedFeatures", "CachedTeacher", "FeatureStore", "replay"]
