import os
import sys

# tests/ holds shared helpers (mp_reference) imported by test modules in subfolders.
sys.path.insert(0, os.path.dirname(__file__))
