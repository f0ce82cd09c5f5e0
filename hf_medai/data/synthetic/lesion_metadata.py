"""Age, sex and body site of the synthetic HAM10000 lesions: a planted, documented melanoma signal for fusion models.

Drawn given the class only, from the metadata's own generator (`np.random.default_rng([seed, METADATA_STREAM])`),
so that (1) images, which depend on the class only, are independent of metadata given the class, and (2) the images
of a seed are byte-identical to those written before metadata carried a signal (tests/test_lesion_data.py pins them).

The effects follow the epidemiology of the real HAM10000 / ISIC data, somewhat exaggerated: melanoma rises with age;
it sits on the back and trunk in men and on the legs in women; nevi are young and found everywhere; akiec and bcc
favour sun-exposed skin. Melanoma-vs-rest from metadata alone reaches an AUROC of about 0.8 (gradient boosting; the
test checks 0.74-0.86): useful, far from perfect, so the image stays necessary. The real columns and vocabulary are
kept, missing values included: about 1% of ages are missing, 0.5% of sexes and 2% of sites are "unknown".
"""

from __future__ import annotations

import numpy as np

from hf_medai.data.synthetic.lesion_rendering import CLASSES

# HAM10000's share of lesions per site (the real vocabulary); the classes without a site effect draw from these.
LOCALIZATIONS = {
    "back": 0.22,
    "lower extremity": 0.21,
    "trunk": 0.14,
    "upper extremity": 0.11,
    "abdomen": 0.10,
    "face": 0.07,
    "chest": 0.04,
    "foot": 0.03,
    "unknown": 0.02,
    "neck": 0.02,
    "scalp": 0.013,
    "hand": 0.009,
    "ear": 0.006,
    "genital": 0.005,
    "acral": 0.001,
}
METADATA_STREAM = 3  # metadata is drawn from np.random.default_rng([seed, METADATA_STREAM])
AGE_MEAN = {"akiec": 68, "bcc": 67, "bkl": 62, "df": 47, "mel": 64, "nv": 41, "vasc": 48}
AGE_SD = 13.0
MALE_P = {"akiec": 0.67, "bcc": 0.62, "bkl": 0.56, "df": 0.48, "mel": 0.62, "nv": 0.50, "vasc": 0.45}
SUN_EXPOSED_BOOST = {"face": 5.0, "scalp": 3.0, "ear": 3.0, "neck": 2.0, "hand": 2.0}  # akiec, bcc
MELANOMA_SITE_BOOST = {
    "male": {"back": 3.0, "trunk": 2.5, "chest": 2.0, "abdomen": 1.5, "lower extremity": 0.3},
    "female": {"lower extremity": 3.0, "foot": 2.0, "back": 0.7, "trunk": 0.5, "abdomen": 0.5},
}
MISSING_AGE_P = 0.01
UNKNOWN_SEX_P = 0.005


def plan_metadata(cls: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[str]]:
    """Age (NaN = missing), sex and localization of each lesion, given its class only (so images, which also depend
    on the class only, are independent of metadata given the class). `rng` is the metadata's own stream."""
    L = len(cls)
    names = [CLASSES[c] for c in cls]
    age = np.array([AGE_MEAN[c] for c in names], float) + rng.normal(0, AGE_SD, L)
    age = np.clip(np.round(age / 5) * 5, 5, 85)  # HAM10000 ages are multiples of 5
    age[rng.random(L) < MISSING_AGE_P] = np.nan
    u = rng.random(L)
    male = np.array([MALE_P[c] for c in names])
    sex = np.where(u < UNKNOWN_SEX_P, "unknown", np.where(u < male, "male", "female")).tolist()
    sites = list(LOCALIZATIONS)
    base = np.array([LOCALIZATIONS[s] for s in sites])

    def site_p(boost: dict[str, float]) -> np.ndarray:
        p = base * np.array([boost.get(s, 1.0) for s in sites])
        return p / p.sum()

    table = {
        "sunny": site_p(SUN_EXPOSED_BOOST),
        "usual": site_p({}),
        **{f"mel_{sx}": site_p(boost) for sx, boost in MELANOMA_SITE_BOOST.items()},
        "mel_unknown": site_p({}),
    }
    key = [f"mel_{sx}" if c == "mel" else "sunny" if c in ("akiec", "bcc") else "usual" for c, sx in zip(names, sex)]
    cdf = {k: np.cumsum(p) for k, p in table.items()}
    u = rng.random(L)
    site = [sites[min(int(np.searchsorted(cdf[k], x, side="right")), len(sites) - 1)] for k, x in zip(key, u)]
    return age, sex, site
