#!/usr/bin/env python
"""Write the small synthetic datasets the tests, smoke runs and tutorials train on (see emo_mm.datasets.synthetic).

    python tools/misc/make_mini_data.py [--out data/mini] [--seed 0] [--only coco|ade|imagenet] [--force]
"""
import sys

from emo_mm.datasets.synthetic import main

if __name__ == '__main__':
    sys.exit(main())
