from hwkd.metrics.quality import BASE_METRICS, DNSMOS_METRICS, score_clip, score_pairs, si_sdr, summarize

__all__ = ["BASE_METRICS", "DNSMOS_METRICS", "score_clip", "score_pairs", "si_sdr", "summarize"]
