"""vreloc-tf: weakly and fully supervised video re-localization (Huang et al., AAAI 2020)."""

__version__ = "0.1.0"
