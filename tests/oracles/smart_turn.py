"""The end-of-turn model's Python reference, as the pipecat-ai 1.14.0 wheel ships it: the oracle for
tests/turn.rs. Reads 16 kHz float32 audio (raw, little-endian) from argv[2], writes the log-mel
features the reference computes (80 x 800 float32, raw) to argv[3] and prints the probability that
the speaker has finished, as the reference's analyzer computes it with the model at argv[1]."""

import sys

import numpy as np
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

model, audio_path, features_path = sys.argv[1:4]
audio = np.fromfile(audio_path, dtype="<f4")
analyzer = LocalSmartTurnAnalyzerV3(smart_turn_model_path=model, sample_rate=16000)

# The window the analyzer gives the model: the last 8 s, zeros before shorter audio.
window = 16000 * 8
if len(audio) > window:
    last = audio[-window:]
else:
    last = np.pad(audio, (window - len(audio), 0), mode="constant")
compute_whisper_log_mel_features(last, do_normalize=True).astype("<f4").tofile(features_path)
print(analyzer._predict_endpoint(audio)["probability"])
