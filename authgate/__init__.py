"""authgate"""
