import sys
from pathlib import Path

# The synthetic-results helper lives beside these tests.
sys.path.insert(0, str(Path(__file__).parent))
