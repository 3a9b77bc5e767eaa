"""Usage recording and dependence signals."""
