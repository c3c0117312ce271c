"""wpo-agent: Wasserstein Policy Optimization as a JAX, Acme-style distributed agent."""

import setuptools

setuptools.setup(
    name='wpo-agent',
    version='0.1.0',
    description=('Wasserstein Policy Optimization (Pfau et al., ICML 2025) as a '
                 'JAX actor-learner agent for the DeepMind Control Suite.'),
    packages=setuptools.find_packages(include=['wpo_agent', 'wpo_agent.*']),
    python_requires='>=3.10,<3.11',
    # Exact, tested pins live in requirements.txt; these are the direct needs.
    install_requires=[
        'absl-py', 'chex', 'dm-acme==0.4.0', 'dm-control', 'dm-env',
        'dm-launchpad==0.5.0', 'dm-reverb==0.7.3', 'dm-tree', 'flax', 'gym',
        'jax', 'matplotlib', 'mujoco', 'numpy<2', 'optax', 'orbax-checkpoint',
        'protobuf<3.20', 'psutil', 'tensorflow-cpu==2.8.4',
    ],
    entry_points={'console_scripts': [
        'wpo-toy=wpo_agent.analysis.toy:main',
        'wpo-plot=wpo_agent.analysis.plot:main',
        'wpo-report=wpo_agent.analysis.report:main',
        'wpo-video=wpo_agent.analysis.video:main',
    ]},
)
