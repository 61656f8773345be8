from hwkd.audio.io import AudioInfo, audio_info, read_audio, resample, write_wav_atomic

__all__ = ["AudioInfo", "audio_info", "read_audio", "resample", "write_wav_atomic"]
