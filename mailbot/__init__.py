"""mailbot: the email desk of the Xiamen sub-centre of the China E-Port data centre."""

__version__ = "0.1.0"
