"""codestage: at which training stage does code data help a language model reason?"""

__version__ = "0.1.0"
