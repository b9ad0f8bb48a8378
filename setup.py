from setuptools import find_packages, setup

setup(
    name='emo_mm',
    version='0.1.0',
    description='EMO / EMOv2 backbones as OpenMMLab 2.x plugins (mmpretrain, mmdet, mmseg)',
    packages=find_packages(include=['emo_mm', 'emo_mm.*']),
    python_requires='>=3.10',
    install_requires=[
        'mmengine==0.10.7',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'mmpretrain==1.2.0',
        'ftfy',
        'regex',
        'setuptools>=77,<81',
        'onnx',
        'onnxscript',
        'onnxruntime',
    ],
    extras_require={'tests': ['pytest']},
)
