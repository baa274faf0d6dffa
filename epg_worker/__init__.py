"""epg_worker"""
