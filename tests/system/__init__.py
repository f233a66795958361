"""
The system tier; see tests/conftest.py.
"""
