# -*- coding: utf-8 -*-
# Copyright: (c) 2026, INTOWORK platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: mail_message
short_description: A mail for sendmail -t, built by Python's email package
version_added: 0.1.0
description:
  - Builds the message (headers and a plain text body) with Python's C(email) package, which refuses a header
    value holding a line break, so no value (an address, a database or host name in the subject) can add a
    header or a recipient.
options:
  _input:
    description: The body.
    type: str
    required: true
  sender:
    description: The From address.
    type: str
    required: true
  recipients:
    description: The To addresses.
    type: list
    elements: str
    required: true
  subject:
    description: The subject.
    type: str
    required: true
author:
  - INTOWORK platform team (@intowork)
"""

EXAMPLES = r"""
- name: Mail the event
  ansible.builtin.command:
    argv: [/usr/sbin/sendmail, -t, -oi]
    stdin: "{{ 'The deployment worked.' | intowork.pgops.mail_message('pgops@db1', ['ops@example.com'], 'deployed') }}"
"""

RETURN = r"""
_value:
  description: The whole message, headers first.
  type: str
"""

from email.message import EmailMessage
from email.policy import SMTP

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text


def mail_message(body, sender, recipients, subject):
    """The message as sendmail -t reads it; AnsibleFilterError naming the value a header cannot hold."""
    message = EmailMessage(policy=SMTP.clone(linesep="\n"))
    for header, value in (("From", to_text(sender)), ("To", ", ".join(to_text(item) for item in recipients)),
                          ("Subject", to_text(subject))):
        try:
            message[header] = value
        except (ValueError, TypeError) as error:
            raise AnsibleFilterError("mail_message: the %s header %s cannot be sent (%s)" % (header, repr(value), error))
    message.set_content(to_text(body))
    try:
        return message.as_string()
    except (ValueError, TypeError) as error:
        raise AnsibleFilterError("mail_message: the message cannot be sent (%s)" % error)


class FilterModule(object):
    def filters(self):
        return {"mail_message": mail_message}
