# EMOv2-1M ImageNet-1k, 224x224 (official top-1 72.3): the EMO recipe of emo_1m_8xb256_in1k.py at the EMOv2 batch,
# 128 per GPU x 8 GPUs = 1024, with the lr scaled to it (1.5e-3 per 512 images).
_base_ = './emo_1m_8xb256_in1k.py'

model = dict(
    backbone=dict(type='emo_mm.EMOv2', arch='1m'),
    head=dict(in_channels=180))

train_dataloader = dict(batch_size=128)
optim_wrapper = dict(optimizer=dict(lr=1.5e-3 * 1024 / 512))
auto_scale_lr = dict(base_batch_size=1024)
