"""`python -m keras_vit.cli ...` runs the `keras-vit` command."""

import sys

from keras_vit.cli.main import main

sys.exit(main())
