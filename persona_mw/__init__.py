"""persona_mw"""
