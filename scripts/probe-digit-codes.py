"""Linear probes on the committed digit codes (issue 11, acceptance 3 diagnosis).

How much of the digit label the committed vq-digits codes carry, read by softmax regression:
one-hot (position, code) features, and a bag of codes without positions. Run from the repo
root: `python3 scripts/probe-digit-codes.py` (needs numpy). Prints train/held-out accuracy.
"""
import gzip, struct, numpy as np
b = gzip.open('models/assets/vq-digits/digit-codes.u16.gz').read()
assert b[:8] == b'MMCODES1'
count, n, cb = struct.unpack('<III', b[8:20])
codes = np.frombuffer(b[20:], dtype='<u2').reshape(count, n).astype(int)
labels = np.array([int(x) for x in open('models/assets/data/digits/labels.txt').read().split()])
split = open('models/assets/data/digits/split.txt').read().split()
print(count, n, cb, labels[:3], split[:3], len(split))
tr = np.array([s.startswith('train') for s in split])
X = np.zeros((count, n*cb), np.float32)
for i in range(count):
    X[i, np.arange(n)*cb + codes[i]] = 1
# softmax regression
rng = np.random.default_rng(0)
W = np.zeros((n*cb, 10), np.float32)
Y = np.eye(10)[labels]
Xtr, Ytr = X[tr], Y[tr]
for it in range(300):
    z = Xtr @ W; z -= z.max(1, keepdims=True); p = np.exp(z); p /= p.sum(1, keepdims=True)
    g = Xtr.T @ (p - Ytr) / len(Xtr) + 1e-3 * W
    W -= 2.0 * g
pred = (X @ W).argmax(1)
print('train acc', (pred[tr] == labels[tr]).mean(), 'test acc', (pred[~tr] == labels[~tr]).mean())
# bag of codes, no positions
Xb = np.zeros((count, cb), np.float32)
for i in range(count):
    np.add.at(Xb[i], codes[i], 1.0)
Xb /= 8
W = np.zeros((cb, 10), np.float32)
for it in range(2000):
    z = Xb[tr] @ W; z -= z.max(1, keepdims=True); p = np.exp(z); p /= p.sum(1, keepdims=True)
    W -= 1.0 * (Xb[tr].T @ (p - Ytr) / tr.sum() + 1e-4 * W)
pred = (Xb @ W).argmax(1)
print('bag: train', (pred[tr] == labels[tr]).mean(), 'test', (pred[~tr] == labels[~tr]).mean())
