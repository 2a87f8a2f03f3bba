"""Risk service: pre-trade limits, trading state (kill switch, safe mode) and exit brackets."""
