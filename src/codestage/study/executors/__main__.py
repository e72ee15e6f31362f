"""`python -m codestage.study.executors SPEC.json`: run one job as the local engine starts it."""

import sys

from codestage.study.executors.runjob import main

sys.exit(main())
